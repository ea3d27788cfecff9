"""PANNs (Kong et al. 2020, github.com/qiuqiangkong/audioset_tagging_cnn): LeeNet11 and
LeeNet24 checkpoints -> `SampleCNN` configs of `arch="leenet"`.

A PANNs checkpoint is `{"iteration": int, "model": state_dict, "sampler": ...}`. The
state dict holds `conv_block{1..9}.conv1.weight` and `.bn1.*` (plus `conv2` / `bn2` in
LeeNet24), `fc1.{weight,bias}` and `fc_audioset.{weight,bias}` (527 AudioSet classes at
32 kHz). The sampler state holds NumPy arrays, which `torch.load(weights_only=True)`
refuses unless allowed: exactly the NumPy globals such a state needs are allow-listed
(`sampler_globals`), safe loading is never turned off.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .build import check_file, load_state
from .tags import resolve_tags

__all__ = ["import_panns", "sampler_globals"]

_BLOCK_KEY = re.compile(r"^conv_block(\d+)\.conv1\.weight$")


def sampler_globals() -> list:
    """What unpickling PANNs' sampler state (int64 / int32 index arrays, NumPy integer
    scalars) builds: arrays, their dtypes, scalars, under NumPy 1.x's module names (the
    released files) and 2.x's."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    mm = core.multiarray
    found = [mm._reconstruct, mm.scalar, np.ndarray, np.dtype,
             (mm._reconstruct, "numpy.core.multiarray._reconstruct"),
             (mm.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # NumPy >= 1.25 builds each dtype as an instance of its class
        found += [dtypes.Int64DType, dtypes.Int32DType]
    return found


def _load(path) -> tuple[str, dict]:
    import torch

    src = check_file(path)
    try:
        with torch.serialization.safe_globals(sampler_globals()):
            ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = str(err)
        why = next((ln.strip() for ln in msg.splitlines() if "Unsupported global" in ln
                    or "allowlisted" in ln), type(err).__name__)
        raise ValueError(f"{src}: not a loadable PANNs checkpoint ({why})") from None
    sd = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{src}: not a PANNs checkpoint (expected a dict with a 'model' state dict)")
    return src, sd


def _arch(src: str, sd: dict) -> str:
    """"leenet11" or "leenet24", from the keys."""
    blocks = sorted(int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)))
    if not blocks or "fc_audioset.weight" not in sd or "fc1.weight" not in sd:
        hint = "; it holds " + ", ".join(sorted({k.split(".")[0] for k in sd})[:6]) if sd else ""
        raise ValueError(f"{src}: not a PANNs LeeNet checkpoint (no conv_block*.conv1 / fc1 / "
                         f"fc_audioset weights{hint}); only LeeNet11 and LeeNet24 convert")
    if blocks != list(range(1, 10)):
        raise ValueError(f"{src}: PANNs LeeNets have conv_block1..9, this file has {blocks}")
    return "leenet24" if "conv_block1.conv2.weight" in sd else "leenet11"


def import_panns(path: str | os.PathLike, *, tags=None, sample_rate: int = 32000, bn_eps: float = 1e-5):
    """A PANNs LeeNet11 / LeeNet24 checkpoint -> `SampleCNN` (eval mode), tags from `tags`
    (default the preset "panns-audioset", the 527 AudioSet classes)."""
    from samplecnn.models import get_model_config, model_from_config

    src, sd = _load(path)
    name = _arch(src, sd)
    n_tags = int(sd["fc_audioset.weight"].shape[0])
    names = resolve_tags(tags, n_tags, "panns-audioset", src)
    first = sd["conv_block1.conv1.weight"]
    if first.ndim != 3 or first.shape[1] != 1 or first.shape[2] != 3:
        raise ValueError(f"{src}: conv_block1.conv1 has shape {tuple(first.shape)}, expected (C, 1, 3)")
    cfg = get_model_config(
        name, tags=names, sample_rate=int(sample_rate), bn_eps=bn_eps,
        frontend_channels=int(first.shape[0]),
        channels=[int(sd[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(2, 10)],
        features=int(sd["fc1.weight"].shape[0]),
        extra={"imported_from": {"format": "panns", "file": Path(src).name, "model": name}},
    )
    state = {}
    for k, v in sd.items():
        m = re.match(r"^conv_block(\d+)\.(.*)$", k)
        if m:
            i = int(m.group(1))
            state[("frontend." if i == 1 else f"blocks.{i - 2}.") + m.group(2)] = v
        elif k.startswith("fc1."):
            state["head." + k] = v
        elif k.startswith("fc_audioset."):
            state["fc." + k[len("fc_audioset."):]] = v
        else:
            raise ValueError(f"{src}: unexpected weight {k!r} for a PANNs LeeNet")
    return load_state(model_from_config(cfg, seed=0), {k: v.float() if v.is_floating_point() else v
                                                       for k, v in state.items()}, src)
