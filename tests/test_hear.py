"""`samplecnn.hear`: the HEAR 2021 API, with hearvalidator 2021.0.6's checks mirrored
(the validator needs TensorFlow and Python < 3.9, so it is not a dependency): clips of
1.07, 1.98 and 4.0 s, two of each, for timestamp embeddings; four clips of 2.74 s for
scene embeddings; dtypes, shapes, even spacing within 1 ms, centred timestamps, the last
one within the clip. Models: samplecnn_small (random weights) and a LeeNet11 narrowed to
a 1 s window so that its chunking is exercised on these short clips.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import samplecnn.hear as hear
from samplecnn.checkpoint import save_checkpoint
from samplecnn.inference.onnx import export_graph
from samplecnn.models import create_model

MODELS = {"samplecnn_small": {}, "leenet11": {"input_samples": 32000}}


@pytest.fixture(scope="module", params=list(MODELS))
def built(request, tmp_path_factory):
    model = create_model(request.param, n_tags=6, tags=list("abcdef"), seed=0, **MODELS[request.param]).eval()
    path = tmp_path_factory.mktemp("hear") / f"{request.param}.ckpt"
    save_checkpoint(path, model)
    return model, hear.load_model(str(path))


def test_load_model_attributes(built):
    model, hm = built
    assert isinstance(hm, torch.nn.Module)
    for attr in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size"):
        assert isinstance(getattr(hm, attr), int)
    assert hm.sample_rate in hear.HEAR_RATES and hm.sample_rate == model.config.sample_rate
    assert hm.timestamp_layer == "block5" and hm.hop_samples == 729
    assert hm.hop_samples / hm.sample_rate <= 0.05


def _audio(seconds, sr, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(-1, 1, (n, int(round(seconds * sr)))).astype(np.float32))


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_embeddings_pass_the_validator_checks(built, seconds):
    model, hm = built
    audio = _audio(seconds, hm.sample_rate)
    emb, ts = hear.get_timestamp_embeddings(audio, hm)
    assert emb.dtype == torch.float32 and emb.ndim == 3
    assert emb.shape[0] == 2 and emb.shape[2] == hm.timestamp_embedding_size
    assert ts.shape == emb.shape[:2] and emb.shape[1] > 1
    diffs = np.diff(ts.numpy(), axis=1)
    assert np.all(diffs > 0) and np.abs(diffs - diffs.mean()).max() < 1.0  # even, within 1 ms
    assert diffs.mean() <= 50.0
    duration_ms = audio.shape[1] / hm.sample_rate * 1000
    assert float(ts[:, -1].max()) <= duration_ms and float(ts.min()) >= 0
    assert float(ts[0, -1]) > duration_ms - 2 * diffs.mean()  # frames reach the clip's end
    assert torch.equal(ts[0], ts[1])


def test_timestamp_frames_are_the_layers_frames_at_their_centres(built):
    """Each frame is the model's block5 output over the chunk holding it; its timestamp is
    the centre of the samples it summarises."""
    model, hm = built
    audio = _audio(2.5, hm.sample_rate, n=1, seed=1)
    emb, ts = hear.get_timestamp_embeddings(audio, hm)
    hop = hm.hop_samples
    chunk = (hm.window // hop) * hop
    x = audio[0]
    with torch.no_grad():
        first = model.forward_intermediates(x[:chunk][None, None] if model.config.whole_clip
                                            else x[:hm.window][None, None], ["block5"])["block5"][0].T
        tail_start = chunk * (len(x) // chunk)
        tail = x[tail_start:]
        if not model.config.whole_clip:
            tail = torch.cat([tail, torch.zeros(hm.window - len(tail))])
        last = model.forward_intermediates(tail[None, None], ["block5"])["block5"][0].T
    torch.testing.assert_close(emb[0, : len(first)], first, atol=1e-4, rtol=1e-4)
    offset = 0.0 if model.config.whole_clip else hop / 2
    np.testing.assert_allclose(ts[0, :3].numpy(), (offset + hop * np.arange(3)) * 1000 / hm.sample_rate,
                               rtol=1e-6)
    k = int(np.searchsorted(ts[0].numpy(), (tail_start + offset) * 1000 / hm.sample_rate - 1e-3))
    torch.testing.assert_close(emb[0, k], last[0], atol=1e-4, rtol=1e-4)


def test_scene_embeddings_pass_the_validator_checks(built):
    model, hm = built
    audio = _audio(2.74, hm.sample_rate, n=4, seed=2)
    scene = hear.get_scene_embeddings(audio, hm)
    assert scene.dtype == torch.float32 and scene.shape == (4, hm.scene_embedding_size)
    # The features layer, mean over each window's frames, then over the windows.
    grid_window = hm.window
    x = audio[1]
    starts = range(0, len(x), grid_window)
    with torch.no_grad():
        wins = []
        for s in starts:
            w = x[s: s + grid_window]
            if not model.config.whole_clip:
                w = torch.cat([w, torch.zeros(grid_window - len(w))])
            wins.append(model.embed(w[None, None], "features"))
    torch.testing.assert_close(scene[1], torch.cat(wins).mean(0), atol=1e-4, rtol=1e-4)


def test_onnx_exports_and_bad_input(built, tmp_path):
    model, _ = built
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(export_graph(model, "scores"))
    hm = hear.load_model(str(onnx_path))
    assert hm.scene_embedding_size == hm.timestamp_embedding_size == 6
    audio = _audio(1.07, hm.sample_rate)
    emb, ts = hear.get_timestamp_embeddings(audio, hm)
    assert emb.shape == (2, ts.shape[1], 6) and np.ptp(np.diff(ts[0].numpy())) < 1.0
    assert float(ts[0, -1]) <= 1070.0
    assert hear.get_scene_embeddings(audio, hm).shape == (2, 6)
    with pytest.raises(ValueError, match="needs a model"):
        hear.load_model("")
    with pytest.raises(ValueError, match="no such file, and not a pretrained name"):
        hear.load_model(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(5), hm)
