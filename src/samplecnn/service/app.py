"""The HTTP service: `create_app(tagger, ...)` -> a FastAPI app.

A request's path through the service (docs/serving.md has the promises, docs/
architecture.md the contracts):

1. admission: at most `queue_size` requests are admitted at once (uploading, decoding or
   scoring); one more is answered 503 with `Retry-After` at once, before its body is read;
2. upload: the body is streamed to a private temporary file, counted (413 past the limit,
   without reading the rest), removed on any failure or disconnect (`upload.py`);
3. decoding: in worker processes (`decode.py`), off the event loop, through the tagger's
   own decoding path; a broken file is a 415/422 answer naming the reason;
4. windows: cut on the one window grid (`Tagger.grid` -> `WindowGrid.stream`) and put on
   the head's bounded queue; the batching thread (`scoring.py`, the one batching loop)
   scores windows of concurrent requests together;
5. the record: `Tagger.make_record` (the CLI's record), the taggram or the embeddings.

Why this module is long: it holds the routes and the request lifecycle (admission,
auth, limits, timeouts, shutdown) that every route shares; uploads, decoding and the
batching thread are already in `upload.py`, `decode.py` and `scoring.py`.

Steps 3-5 run under the request timeout (504).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from samplecnn.metrics import check_aggregation
from samplecnn.windows import chunks

from . import decode
from .scoring import HeadScorer, ScorerError
from .upload import MAX_NAME, ApiError, Upload, receive_upload

__all__ = ["create_app", "STATIC_DIR"]

log = logging.getLogger("samplecnn.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CHUNK = 16  # windows per message to the batching thread


# -- schemas (what /openapi.json documents) ---------------------------------------------
class ErrorOut(BaseModel):
    error: str


class HealthOut(BaseModel):
    status: str


class ModelOut(BaseModel):
    name: str
    tags: list[str]
    sample_rate: int
    input_samples: int
    window_s: float
    layers: list[str]
    max_upload_mb: float
    auth_required: bool


class TagOut(BaseModel):
    path: Optional[str]
    duration_s: Optional[float]
    sample_rate: int
    source_sample_rate: Optional[int]
    source_channels: Optional[int]
    segments: int
    window_s: float
    hop_s: Optional[float]
    last_window: str
    aggregate: str
    tags: Optional[dict[str, float]]
    top: list[list[Any]]
    warnings: list[str]
    error: Optional[str]


class TaggramOut(BaseModel):
    path: str
    duration_s: float
    sample_rate: int
    tags: list[str]
    start_s: list[float]
    end_s: list[float]
    scores: list[list[float]]


class EmbedOut(BaseModel):
    path: str
    layer: str
    pool: str
    duration_s: float
    start_s: list[float]
    end_s: list[float]
    windows: list[list[float]]
    mean: list[float]


_AUDIO_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "audio/mpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _errors(*codes: int) -> dict:
    text = {400: "malformed request", 401: "missing or wrong API key", 413: "upload too large",
            415: "not audio / unsupported content type", 422: "broken audio or invalid parameter",
            500: "model call failed", 503: "queue full (see Retry-After)", 504: "request timeout"}
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


class Service:
    """What the app holds between requests: the tagger, the decoding processes, the
    batching threads, the private temporary folder and the admission count."""

    def __init__(self, tagger, *, name: str, api_key: str | None, max_upload_mb: float,
                 max_batch: int, max_wait_ms: float, queue_size: int, timeout_s: float,
                 decode_workers: int):
        for label, value, low in (("max_upload_mb", max_upload_mb, 0), ("max_batch", max_batch, 1),
                                  ("queue_size", queue_size, 1), ("decode_workers", decode_workers, 1)):
            if value < low or (low == 0 and value <= 0):
                raise ValueError(f"{label} must be {'positive' if low == 0 else f'at least {low}'}, got {value}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.tagger = tagger
        self.name = name
        self.api_key = api_key or None
        self.max_upload_mb = float(max_upload_mb)
        self.max_bytes = int(max_upload_mb * 2**20)
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.queue_size = int(queue_size)
        self.timeout_s = float(timeout_s)
        self.decode_workers = int(decode_workers)
        self.admitted = 0
        self.pool: ProcessPoolExecutor | None = None
        self.heads: dict[tuple, HeadScorer] = {}
        self.tmpdir: str | None = None
        self._started = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self.tmpdir = tempfile.mkdtemp(prefix="samplecnn-serve-")  # mode 0700: ours only
        self.pool = self._new_pool()
        self.head(("tag",))
        self._started = True

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: workers start clean (no threads, no torch), however many threads this
        # process runs by then; they import only samplecnn.service.decode.
        pool = ProcessPoolExecutor(self.decode_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=decode.warm_up)
        try:
            for f in [pool.submit(os.getpid) for _ in range(self.decode_workers)]:
                f.result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(
                "the decoding worker processes could not start (a script that creates the app "
                "must run it under `if __name__ == \"__main__\":`, as multiprocessing requires)"
            ) from None
        return pool

    def stop(self) -> None:
        """Finish what is queued, stop the threads and the workers, remove the temp folder."""
        if not self._started:
            return
        self._started = False
        for scorer in self.heads.values():
            scorer.close(timeout=60)
        self.heads.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def head(self, spec: tuple) -> HeadScorer:
        scorer = self.heads.get(spec)
        if scorer is None:
            if spec[0] == "tag":
                compute = self.tagger.logits
            else:
                _, layer, pool = spec
                compute = lambda x, layer=layer, pool=pool: self.tagger.embeddings(x, layer, pool)  # noqa: E731
            scorer = self.heads[spec] = HeadScorer("-".join(spec), compute, max_batch=self.max_batch,
                                                   max_wait_s=self.max_wait_s)
        return scorer

    # -- one request -------------------------------------------------------------------------
    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())
        if not ok:
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           {"WWW-Authenticate": "Bearer"})

    async def run(self, request: Request, spec: tuple, grid, filename: str | None):
        """Admit, receive, decode and score one upload -> `(Upload name, info, Scored)`."""
        if not self._started:
            self.start()
        if self.admitted >= self.queue_size:
            raise ApiError(503, f"server busy: {self.queue_size} requests in progress; retry shortly",
                           {"Retry-After": "1"})
        self.admitted += 1
        try:
            upload = await receive_upload(request, self.tmpdir, self.max_bytes, filename)
            try:
                return await asyncio.wait_for(self._score(upload, spec, grid), self.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"not finished within the request timeout of {self.timeout_s:g} s") from None
            finally:
                _unlink(upload.path)
        finally:
            self.admitted -= 1

    def _replace_pool(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A worker died (killed, out of memory): the pool is unusable; start a new one
        (once, whoever notices first). Its workers start on the next submit."""
        if self.pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = ProcessPoolExecutor(self.decode_workers,
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=decode.warm_up)
            log.warning("a decoding process exited unexpectedly; decoding processes restarted")
        return self.pool

    async def _score(self, upload: Upload, spec: tuple, grid):
        dst = upload.path + ".f32"
        pool = self.pool
        try:
            cf = pool.submit(decode.decode_to_file, upload.path, dst, self.tagger.sample_rate)
        except BrokenProcessPool:
            pool = self._replace_pool(pool)
            cf = pool.submit(decode.decode_to_file, upload.path, dst, self.tagger.sample_rate)
        try:
            out = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            cf.add_done_callback(lambda _f: _unlink(dst))  # the worker finishes later
            raise
        except BrokenProcessPool:
            _unlink(dst)
            self._replace_pool(pool)
            raise ApiError(500, f"{upload.filename}: the decoding process exited unexpectedly") from None
        if not out["ok"]:
            status = 415 if out["kind"] == "not_audio" else 422
            raise ApiError(status, f"{upload.filename}: {out['reason']}")
        info = out["info"]
        samples = decode.open_decoded(dst)
        _unlink(dst)  # the mapping keeps the data; nothing is left on disk
        scorer = self.head(spec)
        key, fut = scorer.open()
        try:
            for starts, wins in chunks(grid.stream(decode.blocks_of(samples)), _CHUNK):
                await scorer.put(("windows", key, starts, wins))
                await asyncio.sleep(0)  # a long file does not hold the event loop
            await scorer.put(("done", key, info))
            scored = await fut
        except BaseException:
            scorer.forget(key)
            raise
        finally:
            del samples
        if scored.error is not None:
            raise ApiError(422, f"{upload.filename}: {scored.error}")
        return upload.filename, info, scored


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _rounded(a: np.ndarray, digits: int = 6) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


class _AccessLog:
    """A concise access line per request on the `samplecnn.serve` logger (pure ASGI, so
    request bodies stream through untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %s %d %.3fs", client[0], scope["method"], scope["path"], status["code"],
                     time.perf_counter() - t0)


def create_app(tagger, *, api_key: str | None = None, max_upload_mb: float = 100, max_batch: int = 64,
               max_wait_ms: float = 5, queue_size: int = 64, timeout_s: float = 60.0,
               decode_workers: int = 1, cors_origins=(), name: str | None = None,
               static_dir: str | os.PathLike | None = None) -> FastAPI:
    """The service for `tagger` (a `samplecnn.tagging.Tagger`).

    api_key: when set, every `/v1/*` request needs `Authorization: Bearer KEY`.
    max_upload_mb: larger bodies get 413. max_batch / max_wait_ms: the batching thread's
    maximum batch and how long the oldest window waits for company. queue_size: requests
    admitted at once (more get 503 + Retry-After). timeout_s: decoding + scoring time per
    request (504 past it). decode_workers: decoding processes. cors_origins: origins
    allowed to call the API from a browser (none by default). name: the model's name in
    `/v1/model`. static_dir: the web page's folder (default: the package's).
    """
    svc = Service(tagger, name=name or "samplecnn", api_key=api_key, max_upload_mb=max_upload_mb,
                  max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
                  timeout_s=timeout_s, decode_workers=decode_workers)
    static = Path(static_dir) if static_dir is not None else STATIC_DIR

    @asynccontextmanager
    async def lifespan(app):
        await asyncio.to_thread(svc.start)
        try:
            yield
        finally:
            # Uvicorn has already waited for the requests in flight; what they queued is
            # scored before the threads stop.
            await asyncio.to_thread(svc.stop)

    from samplecnn import __version__

    # FastAPI's own /docs and /redoc load their scripts from a CDN, so they are blank on
    # an offline machine: /docs is served below from the fastapi-swagger package.
    app = FastAPI(title="samplecnn", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="Music auto-tagging with SampleCNN: tags, taggrams and embeddings "
                              "of uploaded audio.")
    app.state.service = svc

    if api_key is None:
        async def require_key(request: Request) -> None:
            svc.check_key(request)
    else:
        from fastapi.security import HTTPBearer

        # Declared in /openapi.json (so /docs offers "Authorize"); checked by check_key,
        # in constant time, with the service's one-line 401.
        bearer = HTTPBearer(auto_error=False, description="the key given to `samplecnn serve`")

        async def require_key(request: Request, _=Depends(bearer)) -> None:
            svc.check_key(request)

    def grid_of(hop: float | None, last: str):
        try:
            return tagger.grid(hop, last)
        except ValueError as err:
            raise ApiError(422, f"hop: {err}") from None

    # -- errors: one JSON line each ------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        parts = []
        for e in err.errors()[:3]:
            where = " ".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": _one_line("; ".join(parts) or "invalid request")}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": _one_line(err.detail)}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(ScorerError)
    async def _scorer_error(request: Request, err: ScorerError):
        return JSONResponse({"error": _one_line(str(err))}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, err: ClientDisconnect):
        # Nobody reads this; the upload's file is already removed.
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    # -- endpoints -----------------------------------------------------------------------
    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def healthz():
        """Always open (no key): the process is up and serving."""
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelOut, dependencies=[Depends(require_key)],
             responses=_errors(401), tags=["model"])
    async def model_info():
        """The model: its tags, sample rate, segment (window) length and layer names."""
        return {"name": svc.name, "tags": tagger.tags, "sample_rate": tagger.sample_rate,
                "input_samples": tagger.input_samples, "window_s": round(tagger.window_s, 6),
                "layers": tagger.layer_names, "max_upload_mb": svc.max_upload_mb,
                "auth_required": svc.api_key is not None}

    hop_q = Query(None, gt=0, description="hop between windows in seconds (default: one window)")
    last_q = Query("pad", description="the samples after the last full window: pad (score them) or drop")
    name_q = Query(None, max_length=MAX_NAME, description="the file name reported back for a raw body")
    errs = _errors(400, 401, 413, 415, 422, 500, 503, 504)

    @app.post("/v1/tag", response_model=TagOut, dependencies=[Depends(require_key)], responses=errs,
              openapi_extra={"requestBody": _AUDIO_BODY}, tags=["model"])
    async def tag(request: Request, top_k: int = Query(5, ge=0, le=10_000), hop: Optional[float] = hop_q,
                  aggregate: Literal["mean", "max", "logit_mean"] = "mean",
                  last: Literal["pad", "drop"] = last_q, filename: Optional[str] = name_q):
        """Tag one upload: the record `samplecnn tag` writes (every tag's score, the top
        `top_k`), with `path` = the upload's file name as given."""
        check_aggregation(aggregate)
        grid = grid_of(hop, last)
        path, info, scored = await svc.run(request, ("tag",), grid, filename)
        rec = tagger.make_record(None, scored.outputs, info, aggregate=aggregate, top_k=top_k,
                                 hop_s=grid.hop / tagger.sample_rate, last=last)
        rec["path"] = path  # the upload's name as given, not a path on this machine
        return JSONResponse(rec)

    @app.post("/v1/taggram", response_model=TaggramOut, dependencies=[Depends(require_key)],
              responses=errs, openapi_extra={"requestBody": _AUDIO_BODY}, tags=["model"])
    async def taggram(request: Request, hop: Optional[float] = hop_q, last: Literal["pad", "drop"] = last_q,
                      filename: Optional[str] = name_q):
        """Per-window scores `(windows, tags)` with each window's start and end in seconds."""
        from samplecnn.tagging.tagger import FileResult

        grid = grid_of(hop, last)
        path, info, scored = await svc.run(request, ("tag",), grid, filename)
        tg = tagger.taggram_of(FileResult(0, path, info, scored.starts, scored.outputs))
        return JSONResponse({"path": path, "duration_s": round(tg.duration_s, 6),
                             "sample_rate": tg.sample_rate, "tags": tg.tags,
                             "start_s": _rounded(tg.start_s), "end_s": _rounded(tg.end_s),
                             "scores": _rounded(tg.scores)})

    @app.post("/v1/embed", response_model=EmbedOut, dependencies=[Depends(require_key)],
              responses=errs, openapi_extra={"requestBody": _AUDIO_BODY}, tags=["model"])
    async def embed(request: Request, layer: str = Query("features", max_length=64),
                    pool: Literal["mean", "max"] = "mean", hop: Optional[float] = hop_q,
                    last: Literal["pad", "drop"] = last_q, filename: Optional[str] = name_q):
        """One layer's embedding per window (pooled over time) and their mean over windows."""
        from samplecnn.tagging.tagger import _times

        try:
            tagger.check_layer(layer, pool)
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        grid = grid_of(hop, last)
        path, info, scored = await svc.run(request, ("embed", layer, pool), grid, filename)
        start_s, end_s = _times(scored.starts, tagger.input_samples, tagger.sample_rate,
                                info.get("duration_s"))
        windows = scored.outputs.astype(np.float32)
        return JSONResponse({"path": path, "layer": layer, "pool": pool,
                             "duration_s": round(float(info["duration_s"]), 6),
                             "start_s": _rounded(start_s), "end_s": _rounded(end_s),
                             "windows": windows.tolist(), "mean": windows.mean(axis=0).tolist()})

    _mount_docs(app)

    # -- the web page (its files belong to the page; the service only serves them) ---------
    if (static / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        @app.get("/", include_in_schema=False)
        async def index():
            return FileResponse(static / "index.html")

        app.mount("/static", StaticFiles(directory=static), name="static")

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_AccessLog)
    return app


def _mount_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from the package's own copy (fastapi-swagger), no CDN."""
    from fastapi_swagger import patch_fastapi

    # The key a user types into "Authorize" stays in the page, not in the browser's
    # storage (the plugin's default would persist it).
    patch_fastapi(app, docs_url="/docs", redirect_from_root_to_docs=False, title="samplecnn API",
                  swagger_ui_parameters={"tryItOutEnabled": True, "filter": True,
                                         "displayRequestDuration": True})
