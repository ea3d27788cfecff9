"""Filter visualisation: ascent raises each filter's activation; spectra sorted; images."""
from __future__ import annotations

import numpy as np
import pytest

from samplecnn.checkpoint import save_checkpoint
from samplecnn.cli import main
from samplecnn.models import create_model
from samplecnn.visualize import ascend_layer, input_length, kernel_spectra, visualize_filters


def _model():
    return create_model("samplecnn_small", n=5, input_samples=729, width=0.125,
                        tags=["a", "b"], sample_rate=8000, seed=0).eval()


def test_ascent_increases_each_filters_activation():
    model = _model()
    before = ascend_layer(model, "block1", steps=0)
    after = ascend_layer(model, "block1", steps=10)
    assert after.inputs.shape == (model.layer_width("block1"), 729)
    assert np.all(after.gain > before.gain)
    # More steps, higher activations: the ascent keeps climbing.
    further = ascend_layer(model, "block1", steps=20)
    assert np.mean(further.gain > after.gain) > 0.9


def test_spectra_peaks_and_sort_order():
    model = _model()
    r = ascend_layer(model, "frontend", steps=5)
    assert r.spectra.shape == (model.layer_width("frontend"), 729 // 2 + 1)
    assert np.all(np.diff(r.peak_hz[r.order]) >= 0)
    freqs = np.fft.rfftfreq(729, 1 / 8000)
    np.testing.assert_allclose(r.peak_hz, freqs[np.argmax(r.spectra, axis=1)])
    np.testing.assert_allclose(r.inputs.mean(axis=1), 0, atol=1e-5)  # mean removed


def test_ascent_cannot_separate_front_end_filters():
    # Why the front end is drawn from its kernels: a convolution whose stride equals its
    # length tiles the ascent gradient with that period, so every filter peaks at sr / 3.
    model = _model()
    r = ascend_layer(model, "frontend", steps=5)
    assert model.config.first_filter == 3
    np.testing.assert_allclose(r.peak_hz, 8000 / 3, rtol=1e-3)


def test_front_end_kernel_spectra_separate_filters():
    model = _model()
    r = kernel_spectra(model, n_fft=256)
    w = model.frontend.conv[0].weight.detach().double().numpy()[:, 0, :]
    freqs = np.fft.rfftfreq(256, 1 / 8000)
    # Independent DFT of each zero-padded kernel.
    k = np.arange(w.shape[1])
    direct = np.abs(w @ np.exp(-2j * np.pi * np.outer(k, freqs) / 8000))
    np.testing.assert_allclose(r.spectra, direct, rtol=1e-5, atol=1e-6)
    assert r.method == "kernel" and r.inputs.shape == w.shape
    assert np.all(np.diff(r.peak_hz[r.order]) >= 0)
    # Filters now differ: peaks spread over the band, not one value for all.
    assert len(np.unique(np.round(r.peak_hz))) >= 3
    assert r.peak_hz.min() < 1000 and r.peak_hz.max() > 3000


def test_input_length_grows_for_deep_layers_of_large_filters():
    m = create_model("m3n4_59049", n_tags=2)  # first filter 729
    assert input_length(m, "frontend") == 729
    assert input_length(m, "block2") == 729 * 9


def test_cli_writes_one_image_per_layer(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", _model())
    assert main(["visualize", "filters", str(ckpt), "--out", str(tmp_path / "viz"),
                 "--layers", "frontend", "block2", "--steps", "3"]) == 0
    from matplotlib.image import imread

    images = {}
    for layer in ("frontend", "block2"):
        d = np.load(tmp_path / "viz" / f"{layer}.npz")
        assert d["spectra"].shape[0] == len(d["peak_hz"])
        assert str(d["method"]) == ("kernel" if layer == "frontend" else "ascent")
        img = imread(tmp_path / "viz" / f"{layer}.png")  # a readable PNG, 6 x 4 in at 110 dpi
        assert img.shape[:2] == (440, 660)
        images[layer] = img
    # Each image draws its own layer's filters: the plotted areas differ.
    assert np.abs(images["frontend"] - images["block2"]).mean() > 0.01
    assert main(["visualize", "filters", str(ckpt), "--out", str(tmp_path / "v2"),
                 "--layers", "features"]) == 2
    assert "unknown layer" in capsys.readouterr().err


def test_mel_models_are_refused(tmp_path):
    m = create_model("melcnn_small", tags=["a"], seed=0)
    with pytest.raises(ValueError, match="raw-waveform"):
        visualize_filters(m, tmp_path)
