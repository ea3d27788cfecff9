"""CLMR (Spijkervet and Burgoyne 2021, github.com/Spijkervet/CLMR): the contrastive
SampleCNN encoder, plus its linear-evaluation ("finetuner") checkpoint.

Encoder: a Lightning checkpoint (possibly zipped) whose `state_dict` holds
`model.encoder.sequential.{0..10}.{0,1}.*` (and a duplicate `encoder.*` set, and the
projector `model.projector.*`, unused here); older files hold `encoder.*` or bare
`sequential.*` keys. `sequential.0` is conv(k 3, stride 3, no padding) -> BN -> ReLU,
`1..9` conv(k 3, padding 1) -> BN -> ReLU -> max-pool 3, `10` conv(k 3, padding 1) ->
BN -> ReLU: the basic family with `head_kernel=3`. 22,050 Hz, 59,049 samples.
Finetuner: `model.0.weight/bias`, one Linear 512 -> 50 on the encoder's features.
Without it the encoder is an embedding model (its output layer is the identity).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .build import build_basic, check_file, load_torch_file
from .tags import resolve_tags

__all__ = ["import_clmr"]

_PREFIXES = ("model.encoder.", "encoder.", "")


def _state(path) -> tuple[str, dict]:
    src = check_file(path)
    ckpt = load_torch_file(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{src}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return src, sd


def _encoder_layers(src: str, sd: dict) -> list[tuple]:
    for prefix in _PREFIXES:
        pat = re.compile(rf"^{re.escape(prefix)}sequential\.(\d+)\.0\.weight$")
        idx = sorted(int(mt.group(1)) for k in sd if (mt := pat.match(k)))
        if idx:
            break
    else:
        raise ValueError(f"{src}: not a CLMR encoder checkpoint (no [model.]encoder.sequential.* keys)")
    if idx != list(range(len(idx))) or len(idx) < 3:
        raise ValueError(f"{src}: CLMR encoder layers {idx} are not 0..N")

    def get(key: str):
        try:
            return sd[prefix + key].float()
        except KeyError:
            raise ValueError(f"{src}: missing weight {prefix}{key}") from None

    return [(get(f"sequential.{i}.0.weight"), get(f"sequential.{i}.0.bias"),
             tuple(get(f"sequential.{i}.1.{k}") for k in ("weight", "bias", "running_mean", "running_var")))
            for i in idx]


def _linear_head(path, features: int) -> tuple:
    src, sd = _state(path)
    # CLMR's LinearEvaluation module also saves its frozen encoder (`encoder.*`): the head
    # is `model.0`, or (older files) the one 2-D weight outside the encoder and projector.
    weights = ["model.0.weight"] if "model.0.weight" in sd else [
        k for k, v in sd.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2
        and not k.startswith(("encoder.", "model.encoder.", "projector.", "model.projector."))]
    if len(weights) != 1 or sd[weights[0]].ndim != 2 or sd[weights[0]].shape[1] != features:
        raise ValueError(f"{src}: not a CLMR linear-evaluation checkpoint (expected one Linear "
                         f"{features} -> n, found {len(weights)} 2-D weights)")
    w = sd[weights[0]].float()
    b = sd.get(weights[0][: -len("weight")] + "bias")
    return w, (b.float() if b is not None else np.zeros(w.shape[0], np.float32))


def import_clmr(encoder: str | os.PathLike, head: str | os.PathLike | None = None, *, tags=None,
                sample_rate: int = 22050, bn_eps: float = 1e-5):
    """A CLMR encoder checkpoint (+ its linear-evaluation checkpoint) -> `SampleCNN`.

    With `head`: a tagger, tags from `tags` (default "clmr-mtat"). Without: an embedding
    model whose outputs are the 512 encoder features (`feature000`...), marked
    `embedding_only` in its config; use `samplecnn embed` with it.
    """
    src, sd = _state(encoder)
    layers = _encoder_layers(src, sd)
    features = layers[-1][0].shape[0]
    origin = {"format": "clmr", "file": Path(src).name}
    extra: dict = {}
    if head is not None:
        dense = _linear_head(head, features)
        names = resolve_tags(tags, dense[0].shape[0], "clmr-mtat", str(head))
        origin["head_file"] = Path(str(head)).name
    else:
        dense = (np.eye(features, dtype=np.float32), np.zeros(features, np.float32))
        names = [f"feature{i:03d}" for i in range(features)]
        extra["embedding_only"] = True
    return build_basic(src, first=layers[0], blocks=layers[1:-1], head=layers[-1], dense=dense,
                       first_padding=0, sample_rate=sample_rate, tags=names, bn_eps=bn_eps,
                       origin=origin, extra=extra)
