"""What /openapi.json documents: the answers' schemas, the upload body, the error codes.

The answers themselves are built from the tagger's contracts (`Tagger.make_record`,
`Tagger.taggram_from`, `Tagger.embedding_from`); these models describe them.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel

__all__ = ["ErrorOut", "HealthOut", "ModelOut", "TagOut", "TaggramOut", "EmbedOut", "AUDIO_BODY",
           "error_responses"]


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
    thresholds: Optional[list[float]] = None  # per tag, in tag order; None: the model has none


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
    labels: Optional[list[str]]
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


AUDIO_BODY = {
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


def error_responses(*codes: int) -> dict:
    """The `responses=` of a route: each status code's meaning, every body an `ErrorOut`."""
    text = {400: "malformed request", 401: "missing or wrong API key", 413: "upload too large",
            415: "not audio / unsupported content type", 422: "broken audio or invalid parameter",
            500: "model call failed", 503: "queue full (see Retry-After)", 504: "request timeout"}
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}
