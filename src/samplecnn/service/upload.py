"""Receiving an upload: the body streamed to a private temporary file, bounded.

The server names and creates every file it opens (`mkstemp` in its own 0700 folder); a
request chooses nothing on disk, not even a suffix outside the known audio extensions.
The body is counted while it is spooled, so an oversize upload is refused (413) as soon
as it passes the limit, without reading the rest; any failure (oversize, a client that
disconnects, a malformed body) removes the partial file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from samplecnn.audio import AUDIO_EXTENSIONS

try:  # python-multipart >= 0.0.13 names its module python_multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - older python-multipart
    from multipart.multipart import MultipartParser, parse_options_header

__all__ = ["ApiError", "Upload", "receive_upload", "safe_suffix"]

RAW_TYPES = ("audio/", "application/octet-stream")
MAX_NAME = 1024  # characters of a file name (file systems stop at 255 bytes)
MAX_PART_HEADER = 16384  # bytes of one multipart header (python-multipart >= 0.0.18 stops at 4 KiB)


class ApiError(Exception):
    """An answer other than 200: `status`, a one-line `message`, extra `headers`."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())
        self.headers = headers or {}


@dataclass
class Upload:
    path: str       # the private temporary file holding the audio bytes
    filename: str   # the name the client gave (reported back, never opened)
    size: int       # bytes of audio


def safe_suffix(filename: str | None) -> str:
    """The upload's extension if it is a known audio one (decoders use it as a hint),
    else `.bin`; never anything the client spelled otherwise."""
    ext = os.path.splitext(filename or "")[1].lower()
    return ext if ext in AUDIO_EXTENSIONS else ".bin"


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MB")


class _Spool:
    """One private temporary file, created on first use."""

    def __init__(self, folder: str):
        self.folder = folder
        self.fd: int | None = None
        self.path: str | None = None
        self.size = 0

    def open(self, filename: str | None) -> None:
        self.fd, self.path = tempfile.mkstemp(prefix="upload-", suffix=safe_suffix(filename),
                                              dir=self.folder)

    def write(self, data: bytes) -> None:
        if data:
            os.write(self.fd, data)
            self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


async def receive_upload(request, folder: str, max_bytes: int, filename: str | None = None) -> Upload:
    """Spool the request's audio (multipart field `file`, or a raw `audio/*` body) to a
    private file in `folder`. Raises `ApiError` (400/413/415); `ClientDisconnect`
    propagates. Nothing is left on disk unless an `Upload` is returned."""
    if filename is not None and len(filename) > MAX_NAME:  # `?filename=`: the same 400 as a part's
        raise ApiError(400, f"the file name is longer than {MAX_NAME} characters")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise _too_large(max_bytes)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
    ctype = request.headers.get("content-type", "")
    kind, params = parse_options_header(ctype)
    kind = kind.decode("latin-1").lower()
    spool = _Spool(folder)
    try:
        if kind == "multipart/form-data":
            name = await _receive_multipart(request, params, spool, max_bytes)
        elif kind.startswith(RAW_TYPES):
            name = filename or "upload"
            spool.open(name)
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(max_bytes)
                spool.write(chunk)
        else:
            raise ApiError(415, "send the audio as multipart/form-data field 'file' or as a raw "
                                f"body with an audio/* content type (got {ctype or 'no content type'!r})")
        spool.close()
        return Upload(spool.path, name, spool.size)
    except BaseException:
        spool.discard()
        raise


async def _receive_multipart(request, params: dict, spool: _Spool, max_bytes: int) -> str:
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary")
    state = {"field": b"", "value": b"", "headers": {}, "in_file": False, "name": None,
             "done": False, "problem": None}

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]
        if len(state["value"]) > MAX_PART_HEADER:
            state["problem"] = f"a multipart header longer than {MAX_PART_HEADER} bytes"
            state["value"] = b""

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        disp, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        field = opts.get(b"name", b"").decode("utf-8", "replace")
        state["in_file"] = field == "file" and spool.path is None
        if state["in_file"]:
            raw = opts.get(b"filename")
            state["name"] = raw.decode("utf-8", "replace") if raw is not None else "upload"
            if len(state["name"]) > MAX_NAME:
                state["problem"] = f"the file name is longer than {MAX_NAME} characters"
                state["in_file"] = False
                return
            spool.open(state["name"])

    def on_part_data(data, start, end):
        if state["in_file"]:
            spool.write(data[start:end])

    def on_part_end():
        state["in_file"] = False

    def on_end():
        state["done"] = True

    parser = MultipartParser(boundary, callbacks={
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end,
    })
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(max_bytes)
            if chunk:
                parser.write(chunk)
            if state["problem"]:
                raise ApiError(400, state["problem"])
        parser.finalize()
    except (ApiError, ClientDisconnect):
        raise
    except Exception as err:  # the parser's complaint about a malformed body
        raise ApiError(400, f"malformed multipart body ({' '.join(str(err).split()) or type(err).__name__})") from None
    if state["name"] is None:
        raise ApiError(400, "multipart body has no 'file' field")
    if not state["done"]:
        raise ApiError(400, "multipart body ended before its closing boundary")
    return state["name"]
