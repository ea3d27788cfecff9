"""The paper's filter visualisation: what each filter of the lower layers responds to.

The strided front end is shown by the spectra of its learned kernels themselves: gradient
ascent through a convolution whose stride equals its length tiles the kernel with period
`filter` samples, so every filter's ascent input peaks at sample_rate / filter and sorting
by peak separates nothing. Each kernel `(filter,)` is zero-padded to `n_fft` samples and
its magnitude spectrum taken; filters are sorted by peak frequency, ties by spectral
centroid (a 3-tap kernel is a low-pass, high-pass or band-stop shape, so many share a
peak at 0 Hz or Nyquist).

For every filter of a deeper layer, gradient ascent starts from a short random input (729
samples, uniform in +-0.015) and maximises the filter's mean activation, with the
gradient normalised by its RMS and step 1.0, for about 18 steps. The mean of the result
is removed, its magnitude spectrum taken, and the filters of a layer are drawn as one
image (frequency x filter) sorted by the frequency of their spectral peak. Lower layers
of a trained sample-level model come out tuned to frequencies spread roughly on a log
scale.

All filters of a layer are optimised at once as one batch: the network is in eval mode,
so batch elements do not interact and batch element i can ascend filter i.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path, save_figure
from .checkpoint import load_model
from .models import SampleCNN


@dataclass
class LayerFilters:
    """Result for one layer: inputs `(n_filters, length)` after ascent, magnitude spectra
    `(n_filters, length // 2 + 1)`, peak frequencies (Hz), and the sort order."""

    layer: str
    inputs: np.ndarray
    spectra: np.ndarray
    peak_hz: np.ndarray
    order: np.ndarray
    sample_rate: int
    gain: np.ndarray  # mean activation reached per filter (ascent); kernel norm (front end)
    method: str = "ascent"  # "ascent" (gradient-ascent inputs) or "kernel" (learned kernels)


def _layer_output(model: SampleCNN, x: torch.Tensor, layer: str) -> torch.Tensor:
    # forward_intermediates insists on the full segment length; the visualisation runs
    # short inputs through the lower layers only, so it walks the modules itself.
    h = model.frontend(x)
    if layer == "frontend":
        return h
    for i, block in enumerate(model.blocks):
        h = block(h)
        if layer == f"block{i + 1}":
            return h
    raise ValueError(f"layer {layer!r} is not a front-end or block layer; "
                     f"choose from {', '.join(model.layer_names[:-1])}")


def input_length(model: SampleCNN, layer: str, length: int = 729) -> int:
    """The input length used for `layer`: `length`, or more where the layer needs it to
    produce at least one output frame (deeper blocks of large-filter models)."""
    c = model.config
    k = 0 if layer == "frontend" else int(layer[5:])
    need = c.first_filter * c.m**k
    return max(int(length), need)


def ascend_layer(model: SampleCNN, layer: str, steps: int = 18, step_size: float = 1.0,
                 length: int = 729, init_scale: float = 0.015, seed: int = 0,
                 max_filters: int | None = None, batch: int = 128) -> LayerFilters:
    """Gradient ascent to every filter (channel) of `layer`; see the module docstring."""
    if layer not in model.layer_names or layer == "features":
        raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(model.layer_names[:-1])}")
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n = model.layer_width(layer)
    if max_filters is not None:
        n = min(n, int(max_filters))
    length = input_length(model, layer, length)
    gen = torch.Generator().manual_seed(seed)
    x_all = (torch.rand(n, 1, length, generator=gen) * 2 - 1) * init_scale
    gains = torch.zeros(n)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        x = x_all[lo:hi].clone().requires_grad_(True)
        idx = torch.arange(lo, hi)
        for _ in range(steps):
            h = _layer_output(model, x, layer)                   # (b, C, T)
            act = h[torch.arange(hi - lo), idx].mean(dim=-1)     # (b,) own filter each
            (grad,) = torch.autograd.grad(act.sum(), x)
            rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            with torch.no_grad():
                x += step_size * grad / (rms + 1e-5)
        with torch.no_grad():
            h = _layer_output(model, x, layer)
            gains[lo:hi] = h[torch.arange(hi - lo), idx].mean(dim=-1)
        x_all[lo:hi] = x.detach()
    inputs = x_all[:, 0].numpy().astype(np.float64)
    inputs = inputs - inputs.mean(axis=1, keepdims=True)
    spectra = np.abs(np.fft.rfft(inputs, axis=1))
    freqs = np.fft.rfftfreq(length, d=1.0 / model.sample_rate)
    peak = freqs[np.argmax(spectra, axis=1)]
    order = np.argsort(peak, kind="stable")
    return LayerFilters(layer, inputs.astype(np.float32), spectra.astype(np.float32), peak,
                        order, model.sample_rate, gains.numpy())


def kernel_spectra(model: SampleCNN, n_fft: int = 512) -> LayerFilters:
    """Magnitude spectra of the raw front end's learned kernels.

    Shapes: kernels `(C, filter)` -> spectra `(C, n_fft // 2 + 1)` (zero-padded DFT).
    """
    if model.config.frontend != "raw":
        raise ValueError("kernel spectra need a raw-waveform front end")
    conv = model.frontend.conv[0]
    kernels = conv.weight.detach().double().cpu().numpy()[:, 0, :]          # (C, k)
    n_fft = max(int(n_fft), kernels.shape[1])
    spectra = np.abs(np.fft.rfft(kernels, n=n_fft, axis=1))
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / model.sample_rate)
    peak = freqs[np.argmax(spectra, axis=1)]
    power = spectra ** 2
    centroid = (power * freqs).sum(axis=1) / np.maximum(power.sum(axis=1), 1e-30)
    order = np.lexsort((centroid, peak))
    return LayerFilters("frontend", kernels.astype(np.float32), spectra.astype(np.float32),
                        peak, order, model.sample_rate,
                        np.linalg.norm(kernels, axis=1), method="kernel")


def plot_layer(result: LayerFilters, path: str | os.PathLike, title: str | None = None) -> Path:
    """One image: x = filters sorted by peak frequency, y = frequency, colour = magnitude
    normalised per filter (dB)."""
    from matplotlib.figure import Figure  # no pyplot, no backend: the caller's is left alone

    spec = result.spectra[result.order].T                        # (freq, filters)
    spec = spec / np.maximum(spec.max(axis=0, keepdims=True), 1e-12)
    db = 20 * np.log10(np.maximum(spec, 1e-3))
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    nyq = result.sample_rate / 2
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-40, vmax=0,
                   extent=(0, spec.shape[1], 0, nyq / 1000))
    ax.set_xlabel("filter (sorted by peak frequency)")
    ax.set_ylabel("frequency (kHz)")
    what = "learned kernels (zero-padded)" if result.method == "kernel" else "gradient-ascent inputs"
    ax.set_title(title or f"{result.layer}: spectra of {what}")
    fig.colorbar(im, ax=ax, label="dB (per filter)")
    fig.tight_layout()
    return save_figure(fig, path)


def visualize_filters(checkpoint: str | os.PathLike | SampleCNN, out_dir: str | os.PathLike,
                      layers: list[str] | None = None, steps: int = 18, step_size: float = 1.0,
                      length: int = 729, seed: int = 0, max_filters: int | None = None,
                      log=None) -> dict[str, dict]:
    """Visualise the filters of the lower layers of a checkpoint into `out_dir`.

    Default layers: the front end and the first three blocks. The front end is drawn from
    its kernels' spectra (see the module docstring), deeper layers by gradient ascent.
    Writes `<layer>.png` and `<layer>.npz` (inputs, spectra, peak_hz, order, method) per
    layer; returns
    `{layer: {"png", "npz", "peak_hz_sorted"}}`.
    """
    model = checkpoint if isinstance(checkpoint, SampleCNN) else load_model(checkpoint)
    if model.config.frontend != "raw":
        raise ValueError(f"{checkpoint}: filter visualisation needs a raw-waveform model "
                         f"(this one has a {model.config.frontend} front end)")
    if layers is None:
        layers = model.layer_names[: min(4, len(model.layer_names) - 1)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for layer in layers:
        if layer == "frontend":
            r = kernel_spectra(model)
        else:
            r = ascend_layer(model, layer, steps=steps, step_size=step_size, length=length,
                             seed=seed, max_filters=max_filters)
        png = plot_layer(r, out / f"{layer}.png")
        npz = out / f"{layer}.npz"
        with atomic_path(npz, suffix=".npz") as tmp:
            np.savez_compressed(tmp, inputs=r.inputs, spectra=r.spectra, peak_hz=r.peak_hz,
                                order=r.order, sample_rate=r.sample_rate, gain=r.gain,
                                method=r.method)
        results[layer] = {"png": str(png), "npz": str(npz), "method": r.method,
                          "peak_hz_sorted": r.peak_hz[r.order].tolist()}
        if log:
            log(f"{layer}: {len(r.peak_hz)} filters, peaks {r.peak_hz.min():.0f}-{r.peak_hz.max():.0f} Hz -> {png}")
    return results
