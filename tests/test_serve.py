"""`samplecnn serve`: the HTTP API through the ASGI app (httpx), and once through uvicorn.

Every answer is compared with what the CLI / the `Tagger` give for the same file; the
failure paths (broken files, oversize, disconnects, auth, timeouts, a full queue) are
each driven for real, then the next request must be served.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
try:  # the property-based schema check needs schemathesis (a test extra)
    import schemathesis
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    schemathesis = None

from samplecnn.cli import main  # noqa: E402
from samplecnn.service import create_app  # noqa: E402
from samplecnn.tagging import Tagger  # noqa: E402
from samplecnn.testing.datasets import write_tiny_checkpoint  # noqa: E402

TAGS = ["rock", "piano", "quiet", "male vocal"]
SR = 16000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=1)


@pytest.fixture(scope="module")
def tagger(ckpt):
    return Tagger.load(ckpt)


def _noise(seconds, seed, rate=SR, channels=1):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate),) if channels == 1 else (int(seconds * rate), channels)
    return (0.2 * rng.standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good files (WAV, stereo FLAC at another rate, MP3) and the broken ones the CLI reports."""
    root = tmp_path_factory.mktemp("audio")
    good = {}
    sf.write(root / "a.wav", _noise(3.0, 1), SR)
    good["a.wav"] = root / "a.wav"
    sf.write(root / "b.flac", _noise(1.7, 2, 22050, channels=2), 22050)
    good["b.flac"] = root / "b.flac"
    try:
        sf.write(root / "c.mp3", _noise(2.5, 3, 44100), 44100, format="MP3")
        good["c.mp3"] = root / "c.mp3"
    except (sf.LibsndfileError, TypeError, RuntimeError):
        pass  # a libsndfile without MP3 writing: WAV and FLAC still cover the path
    bad = {}
    (root / "empty.mp3").write_bytes(b"")
    bad["empty.mp3"] = root / "empty.mp3"
    (root / "junk.mp3").write_bytes(os.urandom(4000))
    bad["junk.mp3"] = root / "junk.mp3"
    (root / "trunc.wav").write_bytes((root / "a.wav").read_bytes()[:30])
    bad["trunc.wav"] = root / "trunc.wav"
    (root / "notes.mp3").write_text("these are my notes, not a song\n" * 20)
    bad["notes.mp3"] = root / "notes.mp3"
    return good, bad


class Running:
    """An app with its lifespan entered, on an event loop in a thread; `call(coro)` runs
    a coroutine there (so tests stay plain functions and apps are shared by a module)."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._life = app.router.lifespan_context(app)
        self.call(self._life.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    @property
    def service(self):
        return self.app.state.service

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def post(self, url, name, data, **kw):
        return self.call(self.client.post(url, files={"file": (name, data)}, **kw))

    def close(self):
        try:
            self.call(self.client.aclose())
            self.call(self._life.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@contextmanager
def running(tagger, **kw):
    kw.setdefault("decode_workers", 1)
    srv = Running(create_app(tagger, **kw))
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def srv(tagger):
    with running(tagger, max_wait_ms=100, max_batch=16) as s:
        yield s


def _cli_records(ckpt, paths, out, *extra):
    main(["tag", ckpt, *map(str, paths), "--format", "json", "-o", str(out), "--workers", "0", "-q", *extra])
    return {os.path.basename(r["path"]): r for r in json.loads(out.read_text())}


@pytest.fixture(scope="module")
def cli(ckpt, files, tmp_path_factory):
    """`samplecnn tag`'s records of every file: with the defaults, and with options."""
    good, bad = files
    out = tmp_path_factory.mktemp("cli")
    every = [*good.values(), *bad.values()]
    return {"": _cli_records(ckpt, every, out / "default.json"),
            "?top_k=2&hop=0.4&aggregate=logit_mean": _cli_records(
                ckpt, every, out / "options.json", "--top-k", "2", "--hop", "0.4", "--aggregate", "logit_mean")}


def _same_record(served, cli, name):
    assert served["path"] == name
    assert served["tags"] == pytest.approx(cli["tags"], abs=1e-6)
    assert [t for t, _ in served["top"]] == [t for t, _ in cli["top"]]
    for key in cli:
        if key not in ("path", "tags", "top"):
            assert served[key] == cli[key], key


# -- the API answers what the CLI and the Tagger give ------------------------------------------
def test_health_and_model(srv, tagger):
    assert srv.call(srv.client.get("/healthz")).json() == {"status": "ok"}
    m = srv.call(srv.client.get("/v1/model")).json()
    assert m["tags"] == TAGS and m["sample_rate"] == SR and m["input_samples"] == tagger.input_samples
    assert m["window_s"] == pytest.approx(tagger.input_samples / SR, abs=1e-6)
    assert m["auth_required"] is False and "features" in m["layers"]


def test_tag_equals_the_cli_record(srv, cli, files):
    good, _ = files
    for query, records in cli.items():
        for name, path in good.items():
            shown = f"my song ü {name}"  # the name as given comes back
            r = srv.post(f"/v1/tag{query}", shown, path.read_bytes())
            assert r.status_code == 200, r.text
            _same_record(r.json(), records[name], shown)


def test_raw_audio_body_and_a_name_that_is_never_opened(srv, cli, files):
    good, _ = files
    cli = cli[""]["a.wav"]
    # The name points at a real file on this machine: the service must score the body,
    # never the path it names.
    r = srv.call(srv.client.post("/v1/tag", params={"filename": str(good["b.flac"])},
                                 content=good["a.wav"].read_bytes(), headers={"content-type": "audio/wav"}))
    assert r.status_code == 200, r.text
    _same_record(r.json(), cli, str(good["b.flac"]))
    r = srv.call(srv.client.post("/v1/tag", content=b"x" * 100, headers={"content-type": "text/plain"}))
    assert r.status_code == 415 and "audio/*" in r.json()["error"]


def test_taggram_equals_the_tagger(srv, tagger, files):
    good, _ = files
    for name, path in good.items():
        r = srv.post("/v1/taggram?hop=0.5", name, path.read_bytes())
        assert r.status_code == 200, r.text
        got, want = r.json(), tagger.taggram(str(path), hop=0.5)
        assert got["tags"] == TAGS and got["path"] == name
        assert got["duration_s"] == pytest.approx(want.duration_s, abs=1e-6)
        np.testing.assert_allclose(got["start_s"], want.start_s, atol=1e-6)
        np.testing.assert_allclose(got["end_s"], want.end_s, atol=1e-6)
        np.testing.assert_allclose(np.array(got["scores"]), want.scores, atol=1e-6)


def test_embed_equals_the_tagger(srv, tagger, files):
    good, _ = files
    for layer, pool in ("features", "mean"), ("block3", "max"):
        for name, path in good.items():
            r = srv.post(f"/v1/embed?layer={layer}&pool={pool}", name, path.read_bytes())
            assert r.status_code == 200, r.text
            got, want = r.json(), tagger.embed(str(path), layer=layer, pool=pool)
            assert got["layer"] == layer and got["path"] == name
            np.testing.assert_allclose(np.array(got["windows"]), want.windows, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got["mean"], want.clip, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got["start_s"], want.start_s, atol=1e-6)
    r = srv.post("/v1/embed?layer=nope", "a.wav", good["a.wav"].read_bytes())
    assert r.status_code == 422 and "unknown layer 'nope'" in r.json()["error"]


def test_bad_parameters_are_one_line_422s(srv, files):
    good, _ = files
    data = good["a.wav"].read_bytes()
    for query, words in (("top_k=-1", "top_k"), ("hop=0", "hop"), ("hop=0.00001", "hop"),
                         ("hop=inf", "hop"), ("hop=nan", "hop"), ("hop=1e308", "hop"),
                         ("hop=-inf", "hop"), ("aggregate=median", "aggregate")):
        r = srv.post(f"/v1/tag?{query}", "a.wav", data)
        assert r.status_code == 422, query
        err = r.json()["error"]
        assert words in err and "\n" not in err
    r = srv.call(srv.client.post("/v1/tag", files={"other": ("a.wav", data)}))
    assert r.status_code == 400 and "'file'" in r.json()["error"]
    r = srv.post("/v1/tag", "x" * 2000 + ".wav", data)
    assert r.status_code == 400 and "file name is longer" in r.json()["error"]
    r = srv.call(srv.client.post("/v1/tag?filename=" + "y" * 1025, content=data,
                                 headers={"content-type": "audio/wav"}))
    assert r.status_code == 400 and "file name is longer" in r.json()["error"]  # as docs/serving.md says
    r = srv.call(srv.client.post("/v1/tag", content=b"--b\r\nX-Long: " + b"y" * 40000 + b"\r\n\r\n--b--\r\n",
                                 headers={"content-type": "multipart/form-data; boundary=b"}))
    assert r.status_code == 400 and "header" in r.json()["error"]  # python-multipart's limit, or ours
    assert os.listdir(srv.service.tmpdir) == []


# -- bad input: an answer, never a crash ----------------------------------------------------
def test_broken_files_get_a_one_line_4xx_and_the_next_request_is_served(srv, cli, files):
    good, bad = files
    cli = cli[""]
    for name, path in bad.items():
        r = srv.post("/v1/tag", name, path.read_bytes())
        assert r.status_code in (415, 422), (name, r.text)
        err = r.json()["error"]
        assert err == f"{name}: {cli[name]['error']}"  # the reason the CLI gives, one line
        assert "\n" not in err and str(path.parent) not in err and srv.service.tmpdir not in err
        ok = srv.post("/v1/tag", "a.wav", good["a.wav"].read_bytes())
        assert ok.status_code == 200
    assert os.listdir(srv.service.tmpdir) == []  # nothing left behind


def _asgi_post(app, path, chunks, headers, disconnect_after=None):
    """Drive the app with a body in chunks; returns (status, body, chunks the app read)."""
    read = {"n": 0}
    sent = {"status": None, "body": b""}

    async def receive():
        i = read["n"]
        read["n"] += 1
        if disconnect_after is not None and i >= disconnect_after:
            return {"type": "http.disconnect"}
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}
        await asyncio.sleep(3600)  # the body is over: nothing more

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("test", 80)}
    return scope, receive, send, read, sent


def test_oversize_is_refused_without_reading_the_rest(tagger, files):
    good, _ = files
    with running(tagger, max_upload_mb=0.125) as s:  # 128 KiB; a.wav is 94 KiB
        chunks = [b"\0" * 4096] * 100  # 400 KiB, no Content-Length
        scope, receive, send, read, sent = _asgi_post(s.app, "/v1/tag", chunks, {"content-type": "audio/wav"})
        s.call(s.app(scope, receive, send))
        assert sent["status"] == 413 and "limit" in json.loads(sent["body"])["error"]
        assert read["n"] <= 33  # 32 chunks fit under the limit; the 33rd passes it
        # A declared length over the limit is refused before anything is read.
        r = s.call(s.client.post("/v1/tag", content=b"\0" * 200_000, headers={"content-type": "audio/wav"}))
        assert r.status_code == 413
        assert os.listdir(s.service.tmpdir) == []
        assert s.post("/v1/tag", "a.wav", good["a.wav"].read_bytes()).status_code == 200


def test_a_client_that_disconnects_mid_upload_leaves_nothing_behind(srv, files):
    good, _ = files
    data = good["a.wav"].read_bytes()
    chunks = [data[i: i + 8192] for i in range(0, len(data), 8192)]
    scope, receive, send, read, sent = _asgi_post(srv.app, "/v1/tag", chunks, {"content-type": "audio/wav"},
                                                  disconnect_after=3)
    srv.call(srv.app(scope, receive, send))
    assert read["n"] == 4 and sent["status"] != 200
    assert os.listdir(srv.service.tmpdir) == []
    assert srv.post("/v1/tag", "a.wav", data).status_code == 200


def test_a_decoding_process_that_dies_is_replaced(srv, files):
    import signal

    good, _ = files
    data = good["a.wav"].read_bytes()
    assert srv.post("/v1/tag", "a.wav", data).status_code == 200
    for pid in list(srv.service.pool._processes):
        os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would
    for _ in range(100):  # bounded: the executor notices within a moment
        if srv.service.pool._broken:
            break
        time.sleep(0.05)
    r = srv.post("/v1/tag", "a.wav", data)
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == pytest.approx(srv.post("/v1/tag", "a.wav", data).json()["tags"], abs=1e-6)


# -- security ---------------------------------------------------------------------------------
def test_api_key(tagger, files):
    good, _ = files
    data = good["a.wav"].read_bytes()
    with running(tagger, api_key="s3cret key") as s:
        assert s.call(s.client.get("/healthz")).status_code == 200  # always open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret key"}):
            r = s.call(s.client.get("/v1/model", headers=headers))
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "API key" in r.json()["error"]
            r = s.call(s.client.post("/v1/tag", files={"file": ("a.wav", data)}, headers=headers))
            assert r.status_code == 401
        ok = {"Authorization": "Bearer s3cret key"}
        assert s.call(s.client.get("/v1/model", headers=ok)).json()["auth_required"] is True
        r = s.call(s.client.post("/v1/tag", files={"file": ("a.wav", data)}, headers=ok))
        assert r.status_code == 200 and r.json()["tags"]


def test_non_ascii_api_key_matches_a_utf8_client(tagger):
    key = "clé-ümlaut-à"  # "à" is c3 a0 in UTF-8: 0xa0 must not be stripped as a space
    with running(tagger, api_key=key) as s:
        ok = {"Authorization": b"Bearer " + key.encode("utf-8")}  # what curl sends
        assert s.call(s.client.get("/v1/model", headers=ok)).status_code == 200
        wrong = {"Authorization": b"Bearer " + key.encode("utf-8")[:-1]}
        assert s.call(s.client.get("/v1/model", headers=wrong)).status_code == 401
    with pytest.raises(ValueError, match="control characters"):
        create_app(tagger, api_key="a\nb")


def test_cors_is_closed_unless_configured(tagger):
    pre = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    with running(tagger) as s:
        r = s.call(s.client.options("/v1/tag", headers=pre))
        assert "access-control-allow-origin" not in r.headers
    with running(tagger, cors_origins=("http://elsewhere.example",)) as s:
        r = s.call(s.client.options("/v1/tag", headers=pre))
        assert r.headers["access-control-allow-origin"] == "http://elsewhere.example"


# -- under load -------------------------------------------------------------------------------
class GatedRunner:
    """The model's runner, held at a gate: a model call waits until the test opens it."""

    def __init__(self, runner):
        self._runner = runner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def logits(self, x):
        self.entered.set()
        self.gate.wait(30)
        return self._runner.logits(x)


def test_timeout_gives_504_and_the_service_goes_on(ckpt, files):
    good, _ = files
    runner = GatedRunner(Tagger.load(ckpt).runner)
    with running(Tagger(runner), timeout_s=0.5) as s:
        r = s.post("/v1/tag", "a.wav", good["a.wav"].read_bytes())
        assert r.status_code == 504 and "timeout" in r.json()["error"]
        runner.gate.set()
        r = s.post("/v1/tag", "a.wav", good["a.wav"].read_bytes())
        assert r.status_code == 200
        assert os.listdir(s.service.tmpdir) == []


def test_a_full_queue_answers_503_with_retry_after(ckpt, files):
    good, _ = files
    data = good["a.wav"].read_bytes()
    runner = GatedRunner(Tagger.load(ckpt).runner)
    with running(Tagger(runner), queue_size=1) as s:
        first = asyncio.run_coroutine_threadsafe(s.client.post("/v1/tag", files={"file": ("a.wav", data)}), s.loop)
        assert runner.entered.wait(30)  # the first request holds the only place
        r = s.post("/v1/tag", "b.wav", data)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]
        runner.gate.set()
        assert first.result(60).status_code == 200
        assert s.post("/v1/tag", "a.wav", data).status_code == 200


def test_30_concurrent_requests_score_as_sequential_ones_and_share_model_calls(srv, files):
    good, _ = files
    jobs = [(name, path.read_bytes(), hop) for hop in (None, 0.3, 0.7) for name, path in good.items()]
    jobs = (jobs * 30)[:30]

    def url(hop):
        return "/v1/tag" if hop is None else f"/v1/tag?hop={hop}"

    sequential = [srv.post(url(hop), name, data).json() for name, data, hop in jobs]
    scorer = srv.service.heads[("tag",)]
    scorer.largest = 0

    async def together():
        return await asyncio.gather(*[srv.client.post(url(hop), files={"file": (name, data)})
                                      for name, data, hop in jobs])

    concurrent = srv.call(together())
    assert all(r.status_code == 200 for r in concurrent)
    for seq, con in zip(sequential, (r.json() for r in concurrent)):
        assert con["path"] == seq["path"] and con["segments"] == seq["segments"]
        assert con["tags"] == pytest.approx(seq["tags"], abs=1e-6)
    most = max(s["segments"] for s in sequential)
    assert scorer.largest > most  # windows of several requests went through one model call


@pytest.mark.skipif(schemathesis is None, reason="schemathesis (a test extra) is not installed")
def test_openapi_schema_property_based(srv):
    """Generated requests (bodies, parameters, headers) for every operation of
    /openapi.json: never a 5xx, every error a one-line JSON `error`, every answer as the
    schema documents it. Bounded: a few examples per operation."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", srv.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/healthz", "/v1/model", "/v1/tag", "/v1/taggram", "/v1/embed"}
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error"} and "\n" not in body["error"]
            # Bytes that fit "format: binary" are rarely audio: a 415/422 for them is right.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        check()


# -- a real server -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_on_loopback_and_a_graceful_stop(ckpt, files):
    """A real server: it serves, and asked to stop with a request in flight, it finishes
    that request (200), then stops and removes its private folder."""
    uvicorn = pytest.importorskip("uvicorn")
    good, _ = files
    runner = GatedRunner(Tagger.load(ckpt).runner)
    app = create_app(Tagger(runner), decode_workers=1)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    data = good["a.wav"].read_bytes()
    answers = []
    try:
        for _ in range(300):  # bounded: at most ~30 s
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the server did not come up")
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        tmpdir = app.state.service.tmpdir
        client = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{base}/v1/tag", files={"file": ("a.wav", data)}, timeout=120)))
        client.start()
        assert runner.entered.wait(60)  # the request is being scored
        server.should_exit = True  # Ctrl-C, as uvicorn sees it
        time.sleep(0.5)
        assert thread.is_alive()  # still serving the request in flight
        runner.gate.set()
        client.join(60)
    finally:
        runner.gate.set()
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive()
    (r,) = answers
    assert r.status_code == 200
    assert r.json()["tags"] == pytest.approx(Tagger.load(ckpt).tag(str(good["a.wav"]))["tags"], abs=1e-6)
    assert not os.path.exists(tmpdir)  # shutdown removed the private folder


# -- the command line -----------------------------------------------------------------------------
def test_serve_command_line_mistakes_are_one_line_errors(ckpt, capsys, monkeypatch):
    monkeypatch.delenv("SAMPLECNN_API_KEY", raising=False)
    assert main(["serve", ckpt, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and "--insecure-no-key" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--host", "127.0.0.1"]) == 2  # no model at all
    assert "--pretrained" in capsys.readouterr().err
    assert main(["serve", "--pretrained", "no-such-weights"]) == 2
    err = capsys.readouterr().err
    assert "no-such-weights" in err and len(err.strip().splitlines()) == 1


def test_the_serve_command_says_only_its_own_lines_and_stops_on_ctrl_c(ckpt, files):
    import queue
    import signal
    import subprocess
    import sys

    good, bad = files
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn.cli", "serve", ckpt, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)
    reader.start()
    seen = []
    try:
        base = None
        deadline = time.monotonic() + 180  # bounded: start-up on a loaded 2-core machine
        while base is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if " on http://127.0.0.1:" in line:
                base = line.split(" on ", 1)[1].split("/ ", 1)[0]
        assert base, f"no listening line; stderr: {seen}"
        for _ in range(300):  # bounded
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        r = httpx.post(f"{base}/v1/tag", files={"file": ("a.wav", good["a.wav"].read_bytes())}, timeout=120)
        assert r.status_code == 200
        r = httpx.post(f"{base}/v1/tag", files={"file": ("junk.mp3", bad["junk.mp3"].read_bytes())}, timeout=120)
        assert r.status_code == 415
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(10)
    while not lines.empty():
        seen.append(lines.get())
    text = [x.rstrip("\n") for x in seen if x.strip()]
    assert proc.returncode in (0, 130), text  # stopped by Ctrl-C, after the requests in flight
    assert any("POST /v1/tag 200" in x for x in text) and any("POST /v1/tag 415" in x for x in text)
    # Only samplecnn's lines: no uvicorn start-up banner, no decoder notes.
    assert all(x.startswith("samplecnn") for x in text), text
