"""What `samplecnn serve` puts around the app under uvicorn: every answer JSON, every
stderr line one line.

- `JsonFailures` wraps the ASGI app: an exception that escapes it (a bug, a request
  cut off when the server stops past its grace period) is answered with one JSON
  `error` line (500, or 503 while shutting down) when no answer has started, and logged
  as one line; uvicorn's own plain-text "Internal Server Error" and its traceback never
  happen.
- `http_protocol()`: uvicorn's HTTP protocol (httptools if installed, else h11) whose
  400 for a request it cannot parse (a bad Content-Length, headers over its limit) is
  the same JSON line instead of text.
- `one_line_logging()`: uvicorn's and python-multipart's log lines go to stderr as
  `samplecnn serve: <message>`, one line each, an exception as its type and message
  (no traceback).
"""
from __future__ import annotations

import asyncio
import json
import logging

__all__ = ["JsonFailures", "http_protocol", "one_line_logging"]

log = logging.getLogger("samplecnn.serve")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _body(message: str) -> bytes:
    return json.dumps({"error": _one_line(message)}, ensure_ascii=False).encode("utf-8")


class JsonFailures:
    """Pure ASGI: the last line of defence for an app's HTTP answers (see the module)."""

    def __init__(self, app):
        self.app = app

    def __getattr__(self, name):  # `state`, `router`, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        where = f"{scope.get('method', '-')} {scope.get('path', '-')}"
        try:
            await self.app(scope, receive, tracking)
        except asyncio.CancelledError:
            log.warning("%s: cut off, the server is stopping", where)
            if not started:
                try:
                    await self._answer(send, 503, "the server is stopping; retry later")
                except (Exception, asyncio.CancelledError):
                    pass  # the connection went with the request
            raise
        except Exception as err:  # a bug: one line here, one JSON line to the client
            log.error("%s: internal error: %s: %s", where, type(err).__name__, _one_line(err))
            if not started:
                await self._answer(send, 500, f"internal error ({type(err).__name__})")

    @staticmethod
    async def _answer(send, status: int, message: str) -> None:
        body = _body(message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def http_protocol():
    """uvicorn's automatic HTTP protocol class with a JSON 400 (see the module)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class JsonHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def send_400_response(self, msg: str) -> None:
            body = _body(f"malformed HTTP request ({msg.rstrip('.')})")
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: application/json\r\n",
                     b"content-length: " + str(len(body)).encode() + b"\r\n",
                     b"connection: close\r\n", b"\r\n"]
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    return JsonHTTPProtocol


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        raw = record.getMessage()
        if "Traceback (most recent call last)" in raw:  # Starlette's lifespan failures
            head = raw.split("Traceback (most recent call last)")[0]
            raw = f"{head.strip().rstrip(':')}: {[x for x in raw.splitlines() if x.strip()][-1]}"
        msg = _one_line(raw.strip(": "))
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            msg += f": {type(err).__name__}" + (f": {_one_line(err)}" if str(err) else "")
        return f"samplecnn serve: {msg}"


def one_line_logging(stream, access: bool) -> None:
    """samplecnn's access log (INFO, or WARNING without `access`), uvicorn's errors and
    python-multipart's parser warnings, one line each on `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLine())
    for name, level in (("samplecnn.serve", logging.INFO if access else logging.WARNING),
                        ("uvicorn", logging.WARNING), ("python_multipart", logging.WARNING),
                        ("multipart", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
