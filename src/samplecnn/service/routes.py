"""The routes: `health` (always open) and `v1` (the model's API; `create_app` includes it
with the key check as a dependency).

Every route gets the service object by `Depends(get_service)` and its scoring options by
`Depends(window_options)` / `Depends(tag_options)`: one `ScoringOptions` built from the
query (choices and bounds read from where each concept lives), checked once against the
model's window grid. Answers come from the tagger's public builders
(`Tagger.make_record`, `taggram_from`, `embedding_from`), never from its internals.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from samplecnn.metrics import AGGREGATIONS
from samplecnn.options import MAX_HOP_S, ScoringOptions
from samplecnn.windows import LAST_WINDOW_POLICIES

from .runtime import Service
from .schemas import AUDIO_BODY, EmbedOut, HealthOut, ModelOut, TaggramOut, TagOut, error_responses
from .upload import MAX_NAME, ApiError

__all__ = ["health", "v1", "get_service", "require_key", "require_bearer_key", "window_options",
           "tag_options"]

health = APIRouter(tags=["service"])
v1 = APIRouter(prefix="/v1", tags=["model"])

_ERRORS = error_responses(400, 401, 413, 415, 422, 500, 503, 504)
_NAME_Q = Query(None, description=f"the file name reported back for a raw body (at most {MAX_NAME} "
                                  "characters, else 400)")


# -- dependencies -----------------------------------------------------------------------------
def get_service(request: Request) -> Service:
    """The app's `Service` (made by `create_app`, started by its lifespan)."""
    return request.app.state.service


async def require_key(request: Request, svc: Service = Depends(get_service)) -> None:
    """The key check of an app without a key (it lets every request through)."""
    svc.check_key(request)


# Declared in /openapi.json (so /docs offers "Authorize"); `Service.check_key` decides, in
# constant time, with the service's one-line 401.
_bearer = HTTPBearer(auto_error=False, description="the key given to `samplecnn serve`")


async def require_bearer_key(request: Request, svc: Service = Depends(get_service),
                             _=Depends(_bearer)) -> None:
    """The key check of an app with a key."""
    svc.check_key(request)


def window_options(
    svc: Service = Depends(get_service),
    hop: Optional[float] = Query(None, gt=0, le=MAX_HOP_S, allow_inf_nan=False,
                                 description="hop between windows in seconds (default: one window)"),
    last: Literal[LAST_WINDOW_POLICIES] = Query(
        "pad", description="the samples after the last full window: pad (score them) or drop"),
) -> ScoringOptions:
    """The window options of a query, checked against the model's grid (422 otherwise)."""
    try:
        options = ScoringOptions(hop=hop, last=last)
        svc.tagger.grid(options)
    except ValueError as err:
        raise ApiError(422, f"hop: {err}") from None
    return options


def tag_options(base: ScoringOptions = Depends(window_options), top_k: int = Query(5, ge=0, le=10_000),
                aggregate: Literal[AGGREGATIONS] = "mean",
                threshold: Optional[float] = Query(
                    None, ge=0, le=1, description="decide every tag at score >= threshold in "
                    "`labels` (default: the model's stored per-tag thresholds)"),
                at_least_one: bool = Query(
                    False, description="`labels` holds at least the top tag when none passes")
                ) -> ScoringOptions:
    """`window_options` plus how a clip's windows are aggregated, listed and decided."""
    try:
        return base.replace(top_k=top_k, aggregate=aggregate, threshold=threshold,
                            at_least_one=at_least_one)
    except ValueError as err:  # NaN passes the bounds above
        raise ApiError(422, str(err)) from None


def _rounded(a: np.ndarray, digits: int = 6) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


# -- routes -------------------------------------------------------------------------------------
@health.get("/healthz", response_model=HealthOut)
async def healthz():
    """Always open (no key): the process is up and serving."""
    return {"status": "ok"}


@v1.get("/model", response_model=ModelOut, responses=error_responses(401))
async def model_info(svc: Service = Depends(get_service)):
    """The model: its tags, sample rate, segment (window) length and layer names."""
    t = svc.tagger
    return {"name": svc.name, "tags": t.tags, "sample_rate": t.sample_rate,
            "input_samples": t.input_samples, "window_s": round(t.window_s, 6),
            "layers": t.layer_names, "max_upload_mb": svc.max_upload_mb,
            "auth_required": svc.api_key is not None,
            "thresholds": None if t.thresholds is None else _rounded(t.thresholds)}


@v1.post("/tag", response_model=TagOut, responses=_ERRORS, openapi_extra={"requestBody": AUDIO_BODY})
async def tag(request: Request, options: ScoringOptions = Depends(tag_options),
              filename: Optional[str] = _NAME_Q, svc: Service = Depends(get_service)):
    """Tag one upload: the record `samplecnn tag` writes (every tag's score, the top
    `top_k`, the decided `labels`), with `path` = the upload's file name as given."""
    path, info, scored = await svc.run(request, ("tag",), options, filename)
    rec = svc.tagger.make_record(None, scored.outputs, info, options)
    rec["path"] = path  # the upload's name as given, not a path on this machine
    return JSONResponse(rec)


@v1.post("/taggram", response_model=TaggramOut, responses=_ERRORS,
         openapi_extra={"requestBody": AUDIO_BODY})
async def taggram(request: Request, options: ScoringOptions = Depends(window_options),
                  filename: Optional[str] = _NAME_Q, svc: Service = Depends(get_service)):
    """Per-window scores `(windows, tags)` with each window's start and end in seconds."""
    path, info, scored = await svc.run(request, ("tag",), options, filename)
    tg = svc.tagger.taggram_from(scored.starts, scored.outputs, info)
    return JSONResponse({"path": path, "duration_s": round(tg.duration_s, 6),
                         "sample_rate": tg.sample_rate, "tags": tg.tags,
                         "start_s": _rounded(tg.start_s), "end_s": _rounded(tg.end_s),
                         "scores": _rounded(tg.scores)})


@v1.post("/embed", response_model=EmbedOut, responses=_ERRORS, openapi_extra={"requestBody": AUDIO_BODY})
async def embed(request: Request, layer: str = Query("features", max_length=64),
                pool: Literal["mean", "max"] = "mean", options: ScoringOptions = Depends(window_options),
                filename: Optional[str] = _NAME_Q, svc: Service = Depends(get_service)):
    """One layer's embedding per window (pooled over time) and their mean over windows."""
    try:
        svc.tagger.check_layer(layer, pool)
    except ValueError as err:
        raise ApiError(422, str(err)) from None
    path, info, scored = await svc.run(request, ("embed", layer, pool), options, filename)
    emb = svc.tagger.embedding_from(layer, scored.starts, scored.outputs, info)
    return JSONResponse({"path": path, "layer": layer, "pool": pool,
                         "duration_s": round(emb.duration_s, 6),
                         "start_s": _rounded(emb.start_s), "end_s": _rounded(emb.end_s),
                         "windows": emb.windows.tolist(), "mean": emb.clip.tolist()})
