"""Issue 19.9: every answer the service can shape is one JSON `error` line (uvicorn's own
400, a refused CORS preflight, a 500, requests cut off at shutdown), and every stderr
line of `samplecnn serve` is one `samplecnn serve:` line, also at SIGTERM past the grace
period and at a double Ctrl-C."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from samplecnn.service import create_app
from samplecnn.service.server import JsonFailures
from samplecnn.tagging import Tagger
from samplecnn.testing.datasets import write_tiny_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.ckpt", ["a", "b"], seed=1)


def _call(app, method, path, raise_app_exceptions=True, **kw):
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kw)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def _json_error(r, status):
    assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
    err = r.json()["error"]
    assert err and "\n" not in err
    return err


def test_refused_cors_preflight_is_json(ckpt):
    app = create_app(Tagger.load(ckpt), cors_origins=("http://ok.example",))
    pre = {"Access-Control-Request-Method": "POST"}
    r = _call(app, "OPTIONS", "/v1/tag", headers={"Origin": "http://evil.example", **pre})
    assert "CORS" in _json_error(r, 400)
    r = _call(app, "OPTIONS", "/v1/tag", headers={"Origin": "http://ok.example", **pre})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ok.example"


def test_an_unexpected_failure_is_a_json_500(ckpt):
    """A bug while serving (here: the request path raising) is a JSON 500 from the app,
    and the server wrapper answers it without letting it reach uvicorn."""
    app = create_app(Tagger.load(ckpt))

    async def broken(*a, **k):
        raise RuntimeError("a bug\nover two lines")

    app.state.service.run = broken
    r = _call(app, "POST", "/v1/tag", raise_app_exceptions=False,
              content=b"RIFF", headers={"content-type": "audio/wav"})
    assert _json_error(r, 500) == "internal error (RuntimeError)"
    r = _call(JsonFailures(app), "POST", "/v1/tag", content=b"RIFF", headers={"content-type": "audio/wav"})
    assert _json_error(r, 500) == "internal error (RuntimeError)"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(ckpt, port):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn.cli", "serve", ckpt, "--port", str(port),
                             "--timeout", "1", "--no-access-log"], stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("samplecnn serve did not start: " + proc.communicate()[1][-2000:])
            time.sleep(0.3)


def _raw(port, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(data)
        s.settimeout(20)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return out


def _body_of(answer: bytes):
    import json

    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), answer[:300]
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm_past_grace", "double_ctrl_c"])
def test_server_answers_json_and_stderr_is_one_line_each(ckpt, stop):
    port = _free_port()
    proc = _serve(ckpt, port)
    try:
        status, err = _body_of(_raw(port, b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"))
        assert status == 400 and "malformed" in err
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        assert _body_of(_raw(port, big))[0] == 400
        # Data after the closing boundary: python-multipart's parser says so on its logger.
        junk = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF"
                b"\r\n--b--\r\ntrailing junk")
        _raw(port, b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
             b"Content-Length: " + str(len(junk)).encode() + b"\r\nConnection: close\r\n\r\n" + junk)
        # An upload still arriving when the server stops: cut off (past the 6 s grace of
        # --timeout 1, or at once on a second Ctrl-C) and answered with a JSON line.
        slow = socket.create_connection(("127.0.0.1", port), 10)
        slow.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"R" * 100)
        time.sleep(1)
        if stop == "sigterm_past_grace":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        slow.settimeout(30)
        answer = b""
        while chunk := slow.recv(65536):  # until the server closes it (connection: close)
            answer += chunk
        slow.close()
        status, err = _body_of(answer)
        assert status == 503 and "stopping" in err
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # samplecnn's lines only ("samplecnn: interrupted" is the CLI's line for Ctrl-C).
    lines = stderr.strip().splitlines()
    assert lines and all(line.startswith(("samplecnn serve: ", "samplecnn: interrupted"))
                         for line in lines), stderr[-3000:]
    assert "Traceback" not in stderr and all(len(line) < 400 for line in lines), stderr[-3000:]
