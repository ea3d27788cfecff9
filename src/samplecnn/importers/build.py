"""Shared by the converters: reading peer files and assembling a `SampleCNN` from arrays."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["as_tensor", "build_basic", "load_torch_file", "check_file"]


def as_tensor(a) -> "torch.Tensor":  # noqa: F821
    import torch

    if isinstance(a, torch.Tensor):
        return a.detach().float().clone()
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def check_file(path: str | os.PathLike) -> str:
    src = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{src}: no such file")
    return src


def load_torch_file(path: str | os.PathLike):
    """`torch.load` of a file, or of the one `.ckpt`/`.pt`/`.pth` inside a zip archive
    (CLMR ships its checkpoints zipped; a torch file is itself a zip, told apart by its
    `data.pkl` member)."""
    import torch

    src = check_file(path)
    data: str | io.BytesIO = src
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):
                inner = [n for n in names if n.endswith((".ckpt", ".pt", ".pth")) and not n.startswith("__MACOSX")]
                if len(inner) != 1:
                    raise ValueError(f"{src}: a zip archive with {len(inner)} checkpoint files "
                                     "(.ckpt/.pt/.pth); expected one")
                data = io.BytesIO(zf.read(inner[0]))
    try:
        try:
            return torch.load(data, map_location="cpu", weights_only=True)
        except Exception:
            # Lightning checkpoints pickle their hyper-parameters as plain objects. The
            # files come from a pinned, hash-verified source or the user's own choice.
            if isinstance(data, io.BytesIO):
                data.seek(0)
            return torch.load(data, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{src}: not a readable PyTorch file ({type(err).__name__})") from None


def put_conv_bn(state: dict, conv: str, bn: str | None, layer: tuple) -> None:
    """`layer` = (kernel (out, in, k), bias (out,), (gamma, beta, mean, var)) -> state keys."""
    import torch

    w, b, (g, beta, mean, var) = layer
    state[f"{conv}.weight"] = as_tensor(w)
    state[f"{conv}.bias"] = as_tensor(b)
    state[f"{bn}.weight"] = as_tensor(g)
    state[f"{bn}.bias"] = as_tensor(beta)
    state[f"{bn}.running_mean"] = as_tensor(mean)
    state[f"{bn}.running_var"] = as_tensor(var)
    state[f"{bn}.num_batches_tracked"] = torch.tensor(0)


def load_state(model, state: dict, src: str):
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{src}: the weights do not form this SampleCNN: "
                         f"{str(err).splitlines()[-1].strip()}") from None
    return model.eval()


def build_basic(src: str, *, first: tuple, blocks: list[tuple], head: tuple, dense: tuple,
                first_padding: int, sample_rate: int, tags: list[str], bn_eps: float,
                origin: dict, extra: dict | None = None):
    """A basic-block SampleCNN from converted arrays.

    first/blocks/head: (kernel (out, in, k), bias (out,), bn (gamma, beta, mean, var));
    dense: (weight (n_tags, in), bias (n_tags,)). Shapes decide the architecture.
    """
    from samplecnn.models import ModelConfig, model_from_config

    if not blocks:
        raise ValueError(f"{src}: no pooled conv layers found")
    ks = {b[0].shape[2] for b in blocks}
    if len(ks) != 1:
        raise ValueError(f"{src}: the pooled convs have different kernel sizes {sorted(ks)}")
    m = ks.pop()
    first_filter = first[0].shape[2]
    if first[0].shape[1] != 1:
        raise ValueError(f"{src}: the first conv has {first[0].shape[1]} input channels, expected 1")
    n_tags = dense[0].shape[0]
    cfg = ModelConfig(
        m=m, n=len(blocks), input_samples=first_filter * m ** len(blocks), sample_rate=int(sample_rate),
        n_tags=n_tags, tags=list(tags), frontend="raw", block="basic",
        frontend_channels=first[0].shape[0], frontend_padding=first_padding,
        head_kernel=head[0].shape[2], channels=[b[0].shape[0] for b in blocks],
        features=head[0].shape[0], width=1.0, bn_eps=bn_eps,
        extra={"imported_from": origin, **(extra or {})},
    )
    model = model_from_config(cfg, seed=0)
    state: dict = {}
    put_conv_bn(state, "frontend.conv.0", "frontend.conv.1", first)
    for i, blk in enumerate(blocks):
        put_conv_bn(state, f"blocks.{i}.conv.0", f"blocks.{i}.conv.1", blk)
    put_conv_bn(state, "head.conv.0", "head.conv.1", head)
    state["fc.weight"] = as_tensor(dense[0])
    state["fc.bias"] = as_tensor(dense[1])
    return load_state(model, state, src)
