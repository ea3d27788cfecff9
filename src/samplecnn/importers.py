"""Public SampleCNN weights -> samplecnn models and checkpoints.

Two layouts are understood; the architecture (m, n, widths, first filter, head kernel,
tag count) is read from the weight shapes, so any m^n variant in those layouts converts.

1. sota-music-tagging-models (Won et al. 2020, github.com/minzwon/sota-music-tagging-models,
   `training/model.py`, class `SampleCNN`): a PyTorch state dict with `layer1..layer{n+2}`
   each `conv` (Conv1d, padding kernel//2) + `bn` (BatchNorm1d), then `dense`. 16 kHz,
   59,049-sample input. Their first layer (kernel 3, stride 3) pads 1 on both sides
   -> `frontend_padding=1`; the last conv is 1x1 in their code (3-wide in some forks ->
   `head_kernel=3`, detected from the shape).
2. The authors' Keras HDF5 files (Lee et al. 2017, Keras 1 / Theano, github.com/jongpillee/
   sampleCNN), and Keras 2 files of the same model: conv layers (first strided, then
   `same` convs each followed by max-pooling, then a 1x1 conv), one BatchNormalization per
   conv, one Dense. Theano convolves (flips kernels) where PyTorch and TensorFlow
   cross-correlate, so kernels of Theano-trained files are reversed along time
   (`flip="auto"`: when the file says backend theano, or is a Keras 1 file that records
   no backend). Keras 1 names BN variance `running_std`; it holds the variance.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["import_sota", "import_keras_h5", "import_weights", "resolve_tags", "TAG_PRESETS",
           "MTAT_TOP50", "MTAT_TOP50_SOTA", "MSD_TOP50"]

#: MagnaTagATune top-50 in the order most repositories use (docs/paper-notes, section 4).
MTAT_TOP50 = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
]
#: The order of sota-music-tagging-models' `split/mtat/top50_tags.txt` (names de-camel-cased):
#: as MTAT_TOP50 but with "female voice" before "metal".
MTAT_TOP50_SOTA = MTAT_TOP50[:47] + ["female voice", "metal", "choral"]
#: Million Song Dataset / Last.fm top-50 (docs/paper-notes, section 4).
MSD_TOP50 = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
]
TAG_PRESETS = {"mtat": MTAT_TOP50, "mtat-sota": MTAT_TOP50_SOTA, "msd": MSD_TOP50}


def resolve_tags(tags: str | Sequence[str] | None, n_tags: int, default: str, src: str) -> list[str]:
    """Tag names from a preset name, a text file (one per line) or a list; checked
    against the `n_tags` outputs of the weights."""
    if tags is None:
        tags = default
    if isinstance(tags, str):
        if tags in TAG_PRESETS:
            names = list(TAG_PRESETS[tags])
        elif Path(tags).is_file():
            names = [ln.strip() for ln in Path(tags).read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            raise ValueError(f"{tags}: neither a tag preset ({', '.join(TAG_PRESETS)}) nor a file")
    else:
        names = [str(t) for t in tags]
    if len(names) != n_tags:
        raise ValueError(f"{src}: the weights have {n_tags} outputs but {len(names)} tag names "
                         "were given; pass --tags FILE with one name per output, in order")
    return names


def _t(a) -> "torch.Tensor":  # noqa: F821
    import torch

    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def _build(src: str, *, first: tuple, blocks: list[tuple], head: tuple, dense: tuple,
           first_padding: int, sample_rate: int, tags, default_tags: str, bn_eps: float,
           origin: dict):
    """Assemble a SampleCNN from converted arrays.

    first/blocks/head: (kernel (out, in, k), bias (out,), bn (gamma, beta, mean, var));
    dense: (weight (n_tags, in), bias (n_tags,)). Shapes decide the architecture.
    """
    import torch

    from samplecnn.models import ModelConfig, model_from_config

    if not blocks:
        raise ValueError(f"{src}: no pooled conv layers found")
    ks = {b[0].shape[2] for b in blocks}
    if len(ks) != 1:
        raise ValueError(f"{src}: the pooled convs have different kernel sizes {sorted(ks)}")
    m = ks.pop()
    n = len(blocks)
    first_filter = first[0].shape[2]
    if first[0].shape[1] != 1:
        raise ValueError(f"{src}: the first conv has {first[0].shape[1]} input channels, expected 1")
    n_tags = dense[0].shape[0]
    names = resolve_tags(tags, n_tags, default_tags, src)
    cfg = ModelConfig(
        m=m, n=n, input_samples=first_filter * m**n, sample_rate=int(sample_rate), n_tags=n_tags,
        tags=names, frontend="raw", block="basic", frontend_channels=first[0].shape[0],
        frontend_padding=first_padding, head_kernel=head[0].shape[2],
        channels=[b[0].shape[0] for b in blocks], features=head[0].shape[0], width=1.0,
        bn_eps=bn_eps, extra={"imported_from": origin},
    )
    model = model_from_config(cfg, seed=0)
    state = {}

    def put(prefix: str, layer: tuple) -> None:
        w, b, (g, beta, mean, var) = layer
        state[f"{prefix}.0.weight"] = _t(w)
        state[f"{prefix}.0.bias"] = _t(b)
        state[f"{prefix}.1.weight"] = _t(g)
        state[f"{prefix}.1.bias"] = _t(beta)
        state[f"{prefix}.1.running_mean"] = _t(mean)
        state[f"{prefix}.1.running_var"] = _t(var)
        state[f"{prefix}.1.num_batches_tracked"] = torch.tensor(0)

    put("frontend.conv", first)
    for i, blk in enumerate(blocks):
        put(f"blocks.{i}.conv", blk)
    put("head.conv", head)
    state["fc.weight"] = _t(dense[0])
    state["fc.bias"] = _t(dense[1])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{src}: the weights do not form a SampleCNN: "
                         f"{str(err).splitlines()[-1].strip()}") from None
    return model.eval()


# -- sota-music-tagging-models -------------------------------------------------------------
def import_sota(path: str | os.PathLike, *, tags=None, sample_rate: int = 16000, bn_eps: float = 1e-5):
    """A sota-music-tagging-models `SampleCNN` state dict (`best_model.pth`) -> `SampleCNN`.

    `tags`: a preset name, a file or a list (default: "mtat-sota").
    """
    import torch

    src = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{src}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{src}: not a readable PyTorch file ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{src}: expected a state dict, got {type(sd).__name__}")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    if any(".conv_1." in k for k in sd):
        raise ValueError(f"{src}: this is sota-music-tagging-models' SampleCNNSE (ResSE_1d "
                         "blocks); only its plain SampleCNN converts")
    idx = sorted({int(mt.group(1)) for k in sd if (mt := re.match(r"layer(\d+)\.conv\.weight$", k))})
    if len(idx) < 3 or idx != list(range(1, len(idx) + 1)) or "dense.weight" not in sd:
        raise ValueError(f"{src}: not a sota-music-tagging-models SampleCNN state dict "
                         "(expected layer1..layerN.conv/bn and dense)")

    def layer(i: int) -> tuple:
        p = f"layer{i}"
        try:
            return (sd[f"{p}.conv.weight"].float().numpy(), sd[f"{p}.conv.bias"].float().numpy(),
                    tuple(sd[f"{p}.bn.{k}"].float().numpy()
                          for k in ("weight", "bias", "running_mean", "running_var")))
        except KeyError as err:
            raise ValueError(f"{src}: missing weight {err.args[0]}") from None

    layers = [layer(i) for i in idx]
    first = layers[0]
    return _build(src, first=first, blocks=layers[1:-1], head=layers[-1],
                  dense=(sd["dense.weight"].float().numpy(), sd["dense.bias"].float().numpy()),
                  first_padding=first[0].shape[2] // 2, sample_rate=sample_rate, tags=tags,
                  default_tags="mtat-sota", bn_eps=bn_eps,
                  origin={"format": "sota-music-tagging-models", "file": Path(src).name})


# -- Keras HDF5 --------------------------------------------------------------------------------
def _attr_list(obj, name: str) -> list[str]:
    vals = obj.attrs.get(name)
    if vals is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vals]


def _attr_str(obj, name: str) -> str | None:
    v = obj.attrs.get(name)
    if v is None:
        return None
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _keras_conv_kernel(w: np.ndarray, src: str, name: str) -> np.ndarray:
    """Keras conv kernel -> `(out, in, k)` (as stored, before any flip)."""
    if w.ndim == 3:  # Keras 2 Conv1D: (k, in, out)
        return w.transpose(2, 1, 0)
    if w.ndim == 4:
        # Keras 1 Convolution1D is a 2D conv stored (k, 1, in, out); Theano dim ordering
        # stores (out, in, k, 1). One output channel is impossible for these models, so
        # a trailing 1 behind several output channels means Theano ordering.
        if w.shape[3] == 1 and w.shape[0] > 1:
            return w[:, :, :, 0]
        if w.shape[1] == 1:
            return w[:, 0, :, :].transpose(2, 1, 0)
    raise ValueError(f"{src}: layer {name}: unexpected conv kernel shape {w.shape}")


def _keras_layers(f, src: str):
    """[(layer name, {weight suffix: array})] in model order, layers without weights dropped."""
    root = f["model_weights"] if "model_weights" in f else f
    names = _attr_list(root, "layer_names")
    if not names:
        raise ValueError(f"{src}: not a Keras weights file (no layer_names attribute)")
    out = []
    for name in names:
        g = root[name]
        weights = {}
        for wn in _attr_list(g, "weight_names"):
            arr = np.asarray(g[wn][()])
            leaf = wn.split("/")[-1].split(":")[0]
            if leaf.startswith(name + "_"):  # Keras 1: "<layer>_W", "<layer>_running_std"
                leaf = leaf[len(name) + 1:]
            weights[leaf] = arr
        if weights:
            out.append((name, weights))
    return out


def _keras_config(f) -> dict:
    """Layer name -> Keras layer config, when the file holds the model config."""
    raw = _attr_str(f, "model_config")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    layers = (cfg.get("config") or {})
    layers = layers.get("layers", []) if isinstance(layers, dict) else layers
    return {lyr.get("config", {}).get("name", lyr.get("name")): lyr.get("config", {}) for lyr in layers
            if isinstance(lyr, dict)}


def import_keras_h5(path: str | os.PathLike, *, tags=None, sample_rate: int = 22050, flip: str = "auto",
                    bn_eps: float | None = None):
    """The authors' Keras HDF5 weights (full model or `save_weights`) -> `SampleCNN`.

    `flip`: "auto" | "yes" | "no" (reverse conv kernels, Theano -> PyTorch). `bn_eps`:
    None reads it from the file's model config, else 1e-5. `tags`: preset, file or list
    (default "mtat"). `sample_rate` defaults to the paper's 22,050 Hz.
    """
    try:
        import h5py
    except ImportError:
        raise ValueError("importing Keras HDF5 files needs h5py (pip install h5py)") from None
    src = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if flip not in ("auto", "yes", "no"):
        raise ValueError(f"flip must be auto, yes or no, got {flip!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{src}: not a readable HDF5 file ({str(err).splitlines()[0]})") from None
    with f:
        backend = _attr_str(f, "backend") or _attr_str(f.get("model_weights", f), "backend")
        version = _attr_str(f, "keras_version") or _attr_str(f.get("model_weights", f), "keras_version")
        layer_cfg = _keras_config(f)
        layers = _keras_layers(f, src)
    if flip == "auto":
        do_flip = backend == "theano" or (backend is None and (version is None or version.startswith("1")))
    else:
        do_flip = flip == "yes"

    convs, bns, denses = [], [], []
    for name, w in layers:
        if "gamma" in w or "moving_mean" in w or "running_mean" in w:
            var = w.get("moving_variance", w.get("running_std"))
            mean = w.get("moving_mean", w.get("running_mean"))
            if var is None or mean is None:
                raise ValueError(f"{src}: layer {name}: batch norm without running statistics")
            c = len(mean)
            bns.append((name, (w.get("gamma", np.ones(c)), w.get("beta", np.zeros(c)), mean, var)))
        elif ("kernel" in w or "W" in w) and (w.get("kernel", w.get("W")).ndim >= 3):
            k = _keras_conv_kernel(w.get("kernel", w.get("W")), src, name)
            if do_flip:
                k = k[:, :, ::-1]
            convs.append((name, k, w.get("bias", w.get("b", np.zeros(k.shape[0])))))
        elif ("kernel" in w or "W" in w):
            kd = w.get("kernel", w.get("W"))
            denses.append((name, kd.T, w.get("bias", w.get("b", np.zeros(kd.shape[1])))))
        else:
            raise ValueError(f"{src}: layer {name}: unrecognised weights {sorted(w)}")
    if len(convs) < 3 or len(bns) != len(convs) or len(denses) != 1:
        raise ValueError(f"{src}: expected N conv layers each with a batch norm and one dense "
                         f"layer, found {len(convs)} conv, {len(bns)} batch norm, {len(denses)} dense")
    if do_flip and convs[1][1].shape[2] % 2 == 0:
        raise ValueError(f"{src}: Theano 'same' padding of even kernels (m={convs[1][1].shape[2]}) "
                         "is one-sided on the other side from PyTorch's; only odd m converts exactly")
    first_name = convs[0][0]
    if first_name in layer_cfg:
        c = layer_cfg[first_name]
        stride = c.get("subsample_length", c.get("strides"))
        stride = stride[0] if isinstance(stride, (list, tuple)) else stride
        if stride is not None and int(stride) != convs[0][1].shape[2]:
            raise ValueError(f"{src}: the first conv has filter {convs[0][1].shape[2]} but stride "
                             f"{stride}; only filter = stride (the m^n family) converts")
    if bn_eps is None:
        eps = {float(layer_cfg[n]["epsilon"]) for n, _ in bns if "epsilon" in layer_cfg.get(n, {})}
        if len(eps) > 1:
            raise ValueError(f"{src}: batch norms with different epsilons {sorted(eps)}")
        bn_eps = eps.pop() if eps else 1e-5
    packed = [(k, b, bn[1]) for (_, k, b), bn in zip(convs, bns)]
    return _build(src, first=packed[0], blocks=packed[1:-1], head=packed[-1],
                  dense=(denses[0][1], denses[0][2]), first_padding=0, sample_rate=sample_rate,
                  tags=tags, default_tags="mtat", bn_eps=float(bn_eps),
                  origin={"format": "keras-hdf5", "file": Path(src).name, "backend": backend,
                          "keras_version": version, "kernels_flipped": bool(do_flip)})


def import_weights(src: str | os.PathLike, out: str | os.PathLike, *, kind: str = "auto", **kwargs):
    """Convert `src` (kind "sota", "keras" or "auto" by extension) and save a samplecnn
    checkpoint at `out`. Returns the model."""
    from samplecnn.checkpoint import save_checkpoint

    if kind == "auto":
        ext = Path(src).suffix.lower()
        kind = "keras" if ext in (".h5", ".hdf5", ".keras") else "sota"
    if kind == "keras":
        model = import_keras_h5(src, **kwargs)
    elif kind == "sota":
        kwargs.pop("flip", None)
        if kwargs.get("bn_eps") is None:
            kwargs.pop("bn_eps", None)
        model = import_sota(src, **kwargs)
    else:
        raise ValueError(f"kind must be sota, keras or auto, got {kind!r}")
    save_checkpoint(out, model, imported_from=model.config.extra.get("imported_from"))
    return model
