"""The authors' Keras HDF5 files (Lee et al. 2017, Keras 1 / Theano, github.com/jongpillee/
sampleCNN) and Keras 2 files of the same model.

Conv layers (first strided, then `same` convs each followed by max-pooling, then a 1x1
conv), one BatchNormalization per conv, one Dense. Theano convolves (flips kernels) where
PyTorch and TensorFlow cross-correlate, so kernels of Theano-trained files are reversed
along time (`flip="auto"`: when the file says backend theano, or is a Keras 1 file that
records no backend). Keras 1 names BN variance `running_std`; it holds the variance.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .build import build_basic, check_file
from .tags import resolve_tags

__all__ = ["import_keras_h5", "keras_default_epsilon"]


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


def keras_default_epsilon(version: str | None) -> float:
    """BatchNormalization's default epsilon in the Keras version that wrote a file: 1e-6 up
    to 1.0.7, 1e-5 for 1.0.8-1.1.2, 1e-3 from 1.2.0 and in Keras 2 and 3. Files that record
    no version are the authors' Keras 1.1 files (1e-5)."""
    if not version:
        return 1e-5
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    v = tuple(parts[:3])
    if v <= (1, 0, 7):
        return 1e-6
    if v < (1, 2, 0):
        return 1e-5
    return 1e-3


def _refuse_keras3(src: str) -> None:
    name = Path(src).name.lower()
    if name.endswith(".weights.h5"):
        raise ValueError(f"{src}: a Keras 3 weights file (*.weights.h5) is not supported; load it "
                         "in Keras 3 and save the model in the legacy HDF5 format (model.save('model.h5'))")
    if name.endswith(".keras"):
        raise ValueError(f"{src}: a Keras 3 archive (.keras) is not supported; load it in Keras 3 "
                         "and save the model in the legacy HDF5 format (model.save('model.h5'))")


def import_keras_h5(path: str | os.PathLike, *, tags=None, sample_rate: int = 22050, flip: str = "auto",
                    bn_eps: float | None = None):
    """The authors' Keras HDF5 weights (full model or `save_weights`) -> `SampleCNN`.

    `flip`: "auto" | "yes" | "no" (reverse conv kernels, Theano -> PyTorch). `bn_eps`:
    None reads it from the file's model config, else the default of the Keras version
    recorded in the file (`keras_default_epsilon`). `tags`: preset, file or list (default
    "keras-mtat", the authors' column order). `sample_rate` defaults to the paper's 22,050 Hz.
    Keras 3 files (`.keras`, `*.weights.h5`) are refused by name.
    """
    try:
        import h5py
    except ImportError:
        raise ValueError("importing Keras HDF5 files needs h5py (pip install h5py)") from None
    src = check_file(path)
    _refuse_keras3(src)
    if flip not in ("auto", "yes", "no"):
        raise ValueError(f"flip must be auto, yes or no, got {flip!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{src}: not a readable HDF5 file ({str(err).splitlines()[0]})") from None
    with f:
        if "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f:
            raise ValueError(f"{src}: a Keras 3 weights layout (layers/<name>/vars) is not supported; "
                             "save the model in the legacy HDF5 format (model.save('model.h5'))")
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
        bn_eps = eps.pop() if eps else keras_default_epsilon(version)
    packed = [(k, b, bn[1]) for (_, k, b), bn in zip(convs, bns)]
    names = resolve_tags(tags, denses[0][1].shape[0], "keras-mtat", src)
    return build_basic(src, first=packed[0], blocks=packed[1:-1], head=packed[-1],
                  dense=(denses[0][1], denses[0][2]), first_padding=0, sample_rate=sample_rate,
                  tags=names, bn_eps=float(bn_eps),
                  origin={"format": "keras-hdf5", "file": Path(src).name, "backend": backend,
                          "keras_version": version, "kernels_flipped": bool(do_flip)})


