"""The HTTP service's app factory: `create_app(tagger, ...)` -> a FastAPI app.

FastAPI's layout for larger applications: `schemas.py` (what /openapi.json documents),
`runtime.py` (the `Service` object: decoding processes, batching threads, admission,
the path of one request), `routes.py` (the routes on `APIRouter`s, with the service and
the scoring options as dependencies), and this factory, which builds the service, wires
its lifespan, the routers, the error handlers (one JSON line each), the offline /docs,
the web page's files and the access log. Uploads, decoding and the batching thread are
`upload.py`, `decode.py` and `scoring.py`. docs/serving.md has the promises,
docs/architecture.md the contracts.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import routes
from .runtime import Service
from .scoring import ScorerError
from .upload import ApiError

__all__ = ["create_app", "STATIC_DIR", "Service"]

log = logging.getLogger("samplecnn.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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


def _json_cors():
    from fastapi.middleware.cors import CORSMiddleware

    class JsonCORS(CORSMiddleware):
        """CORS whose refused preflight ("Disallowed CORS origin") is a JSON line too."""

        def preflight_response(self, request_headers):
            resp = super().preflight_response(request_headers)
            if resp.status_code < 400:
                return resp
            headers = {k: v for k, v in resp.headers.items()
                       if k.lower() not in ("content-length", "content-type")}
            return JSONResponse({"error": _one_line(resp.body.decode("utf-8", "replace"))},
                                status_code=resp.status_code, headers=headers)

    return JsonCORS


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

    app.include_router(routes.health)
    key_check = routes.require_key if api_key is None else routes.require_bearer_key
    app.include_router(routes.v1, dependencies=[Depends(key_check)])

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

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception):
        # Starlette's last handler: a JSON line instead of its plain-text 500 (the error
        # still propagates, to `server.JsonFailures`, which logs it as one line).
        return JSONResponse({"error": f"internal error ({type(err).__name__})"}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, err: ClientDisconnect):
        # Nobody reads this; the upload's file is already removed.
        return JSONResponse({"error": "client disconnected"}, status_code=400)

    _mount_docs(app)

    # -- the web page (its files belong to the page; the service only serves them) ---------
    if (static / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        @app.get("/", include_in_schema=False)
        async def index():
            return FileResponse(static / "index.html")

        app.mount("/static", StaticFiles(directory=static), name="static")

    if cors_origins:
        app.add_middleware(_json_cors(), allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_AccessLog)
    return app


_SWAGGER_ASSETS = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css",
                   "favicon-32x32.png": "image/png"}


def _mount_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from the package's own copy (fastapi-swagger's files), no CDN.

    Every URL in the page is relative (`swagger/...`, `openapi.json`), resolved by the
    browser against the page's own address: never built from the Host or
    X-Forwarded-Proto headers (`Host: evil.example` would load scripts from there, and
    behind a TLS proxy an `http://` URL is blocked as mixed content), and right under a
    proxy's path prefix too."""
    from importlib import resources

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import Response

    # The key a user types into "Authorize" stays in the page, not in the browser's
    # storage (persistAuthorization is left off).
    params = {"tryItOutEnabled": True, "filter": True, "displayRequestDuration": True}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui_html():
        return get_swagger_ui_html(openapi_url="openapi.json", title="samplecnn API",
                                   swagger_js_url="swagger/swagger-ui-bundle.js",
                                   swagger_css_url="swagger/swagger-ui.css",
                                   swagger_favicon_url="swagger/favicon-32x32.png",
                                   swagger_ui_parameters=params)

    @app.get("/swagger/{name}", include_in_schema=False)
    async def swagger_asset(name: str):
        if name not in _SWAGGER_ASSETS:
            raise StarletteHTTPException(404, "Not Found")
        data = resources.files("fastapi_swagger.resources").joinpath(name).read_bytes()
        return Response(content=data, media_type=_SWAGGER_ASSETS[name])
