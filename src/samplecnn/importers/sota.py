"""sota-music-tagging-models (Won et al. 2020, github.com/minzwon/sota-music-tagging-models,
`training/model.py`): `SampleCNN` and `SampleCNNSE` state dicts (`best_model.pth`).

`SampleCNN`: `layer1..layer{n+2}` each `conv` (Conv1d, padding kernel//2) + `bn`, then
`dense`. `SampleCNNSE`: `layer1..layer{n+2}` each a ResSE_1d (`conv_1 bn_1 conv_2 bn_2
dense1 dense2`, plus `conv_3 bn_3` where the stride or width changes), head `dense1 bn
dense2`; it becomes `block="resse"`, `classifier="mlp"`. Both: 16 kHz, 59,049 samples,
first layer kernel 3 / stride 3 / padding 1 (`frontend_padding=1`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .build import as_tensor, build_basic, check_file, load_state, load_torch_file, put_conv_bn
from .tags import resolve_tags

__all__ = ["import_sota"]


def _state_dict(path) -> tuple[str, dict]:
    src = check_file(path)
    sd = load_torch_file(path)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{src}: expected a state dict, got {type(sd).__name__}")
    return src, {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel


def _get(sd: dict, key: str, src: str):
    try:
        return sd[key].float()
    except KeyError:
        raise ValueError(f"{src}: missing weight {key}") from None


def _conv_bn(sd: dict, conv: str, bn: str, src: str) -> tuple:
    return (_get(sd, f"{conv}.weight", src), _get(sd, f"{conv}.bias", src),
            tuple(_get(sd, f"{bn}.{k}", src) for k in ("weight", "bias", "running_mean", "running_var")))


def _layer_indices(sd: dict, suffix: str) -> list[int]:
    return sorted({int(mt.group(1)) for k in sd if (mt := re.match(rf"layer(\d+)\.{suffix}$", k))})


def import_sota(path: str | os.PathLike, *, tags=None, sample_rate: int = 16000, bn_eps: float = 1e-5):
    """A sota-music-tagging-models `SampleCNN` or `SampleCNNSE` state dict -> `SampleCNN`.

    `tags`: a preset name, a file or a list (default "sota-mtat", the order of sota's
    `split/mtat/tags.npy`; "sota-msd" and "sota-jamendo" for their other weights).
    """
    src, sd = _state_dict(path)
    origin = {"format": "sota-music-tagging-models", "file": Path(src).name}
    if any(re.match(r"layer\d+\.conv_1\.weight$", k) for k in sd):
        return _import_sota_se(src, sd, tags, sample_rate, bn_eps, origin)
    idx = _layer_indices(sd, r"conv\.weight")
    if len(idx) < 3 or idx != list(range(1, len(idx) + 1)) or "dense.weight" not in sd:
        hint = ("; it looks like a CLMR checkpoint: use --from clmr" if any(".sequential." in k or
                k.startswith("sequential.") for k in sd) else "")
        raise ValueError(f"{src}: not a sota-music-tagging-models SampleCNN state dict "
                         f"(expected layer1..layerN.conv/bn and dense){hint}")
    layers = [_conv_bn(sd, f"layer{i}.conv", f"layer{i}.bn", src) for i in idx]
    dense = (_get(sd, "dense.weight", src), _get(sd, "dense.bias", src))
    names = resolve_tags(tags, dense[0].shape[0], "sota-mtat", src)
    return build_basic(src, first=layers[0], blocks=layers[1:-1], head=layers[-1], dense=dense,
                       first_padding=layers[0][0].shape[2] // 2, sample_rate=sample_rate, tags=names,
                       bn_eps=bn_eps, origin=origin)


def _import_sota_se(src: str, sd: dict, tags, sample_rate: int, bn_eps: float, origin: dict):
    from samplecnn.models import ModelConfig, model_from_config

    idx = _layer_indices(sd, r"conv_1\.weight")
    if len(idx) < 3 or idx != list(range(1, len(idx) + 1)) or "dense2.weight" not in sd:
        raise ValueError(f"{src}: not a sota-music-tagging-models SampleCNNSE state dict "
                         "(expected layer1..layerN ResSE blocks and dense1/bn/dense2)")
    w = {i: _get(sd, f"layer{i}.conv_1.weight", src) for i in idx}
    first, mid, last = w[idx[0]], [w[i] for i in idx[1:-1]], w[idx[-1]]
    ks = {t.shape[2] for t in mid}
    if len(ks) != 1 or first.shape[1] != 1:
        raise ValueError(f"{src}: not a SampleCNNSE layer table (pooled kernels {sorted(ks)}, "
                         f"{first.shape[1]} input channels)")
    m = ks.pop()
    c = first.shape[0]
    hidden = _get(sd, f"layer{idx[0]}.dense1.weight", src).shape[0]
    n_tags = _get(sd, "dense2.weight", src).shape[0]
    cfg = ModelConfig(
        m=m, n=len(mid), input_samples=first.shape[2] * m ** len(mid), sample_rate=int(sample_rate),
        n_tags=n_tags, tags=resolve_tags(tags, n_tags, "sota-mtat", src), block="resse",
        classifier="mlp", se_reduction=max(1, c // hidden), frontend_channels=c,
        frontend_padding=first.shape[2] // 2, head_kernel=last.shape[2],
        channels=[t.shape[0] for t in mid], features=last.shape[0], bn_eps=bn_eps,
        extra={"imported_from": origin},
    )
    model = model_from_config(cfg, seed=0)
    state: dict = {}

    def block(prefix: str, i: int) -> None:
        p = f"layer{i}"
        put_conv_bn(state, f"{prefix}.conv1.0", f"{prefix}.conv1.1", _conv_bn(sd, f"{p}.conv_1", f"{p}.bn_1", src))
        put_conv_bn(state, f"{prefix}.conv2", f"{prefix}.bn2", _conv_bn(sd, f"{p}.conv_2", f"{p}.bn_2", src))
        for ours, theirs in (("se.fc1", "dense1"), ("se.fc2", "dense2")):
            for t in ("weight", "bias"):
                state[f"{prefix}.{ours}.{t}"] = as_tensor(_get(sd, f"{p}.{theirs}.{t}", src))
        if f"{p}.conv_3.weight" in sd:
            put_conv_bn(state, f"{prefix}.shortcut.0", f"{prefix}.shortcut.1",
                        _conv_bn(sd, f"{p}.conv_3", f"{p}.bn_3", src))

    block("frontend", idx[0])
    for j, i in enumerate(idx[1:-1]):
        block(f"blocks.{j}", i)
    block("head.block", idx[-1])
    for ours, theirs in (("fc.fc1", "dense1"), ("fc.fc2", "dense2")):
        for t in ("weight", "bias"):
            state[f"{ours}.{t}"] = as_tensor(_get(sd, f"{theirs}.{t}", src))
    for t in ("weight", "bias", "running_mean", "running_var"):
        state[f"fc.bn.{t}"] = as_tensor(_get(sd, f"bn.{t}", src))
    import torch

    state["fc.bn.num_batches_tracked"] = torch.tensor(0)
    return load_state(model, state, src)
