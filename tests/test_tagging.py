"""Tagger API: windows, resampling, aggregation, taggrams, embeddings, batch runs."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from samplecnn.audio import resample
from samplecnn.checkpoint import save_checkpoint
from samplecnn.models import create_model
from samplecnn.tagging import Tagger, expand_paths, iter_windows
from samplecnn.windows import WindowGrid

TAGS = ["rock", "piano", "quiet"]
SR = 16000
WIN = 19683  # samplecnn_small: 3 * 3**8 samples at 16 kHz


@pytest.fixture(scope="module")
def model():
    return create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", model)


@pytest.fixture(scope="module")
def tagger(ckpt):
    return Tagger.from_checkpoint(ckpt, batch_size=4)


def _noise(n, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.3 * rng.standard_normal(shape)).astype(np.float32)


def _manual_scores(model, x, hop):
    """Independent reference: explicit window grid with a zero-padded tail."""
    starts = list(range(0, max(len(x) - WIN, 0) + 1, hop)) if len(x) >= WIN else []
    if not starts or starts[-1] + hop < len(x):
        starts.append(starts[-1] + hop if starts else 0)
    wins = []
    for s in starts:
        w = np.zeros(WIN, np.float32)
        seg = x[s: s + WIN]
        w[: len(seg)] = seg
        wins.append(w)
    with torch.no_grad():
        return starts, torch.sigmoid(model(torch.from_numpy(np.stack(wins)).unsqueeze(1))).numpy()


def test_array_without_rate_is_refused(tagger):
    with pytest.raises(ValueError, match="sample rate"):
        tagger.tag(_noise(SR))


@pytest.mark.parametrize("hop_s", [None, 0.5])
def test_scores_match_manual_windows(tagger, model, hop_s):
    x = _noise(int(3.1 * WIN), seed=1)
    rec = tagger.tag(x, sample_rate=SR, hop=hop_s, top_k=2)
    hop = WIN if hop_s is None else int(round(hop_s * SR))
    starts, ref = _manual_scores(model, x, hop)
    assert rec["segments"] == len(starts)
    np.testing.assert_allclose([rec["tags"][t] for t in TAGS], ref.mean(axis=0), atol=2e-6)
    assert set(rec["tags"]) == set(TAGS)
    assert [t for t, _ in rec["top"]] == [TAGS[i] for i in np.argsort(-ref.mean(axis=0))[:2]]
    assert rec["error"] is None and rec["duration_s"] == pytest.approx(len(x) / SR)
    tg = tagger.taggram(x, sample_rate=SR, hop=hop_s)
    np.testing.assert_allclose(tg.scores, ref, atol=2e-6)
    np.testing.assert_allclose(tg.start_s, np.array(starts) / SR)
    assert tg.end_s[-1] == pytest.approx(len(x) / SR)  # capped at the end of the audio
    mx = tagger.tag(x, sample_rate=SR, hop=hop_s, aggregate="max")
    np.testing.assert_allclose([mx["tags"][t] for t in TAGS], ref.max(axis=0), atol=2e-6)


def test_window_grid_pads_last_partial_window():
    x = np.arange(1, 2 * 100 + 31, dtype=np.float32)  # 230 samples, window 100
    wins = list(iter_windows(x, 10, WindowGrid(100, 100), source_sample_rate=10))
    assert [s for s, _ in wins] == [0, 100, 200]
    np.testing.assert_array_equal(wins[2][1][:30], x[200:])
    assert not wins[2][1][30:].any()
    half = list(iter_windows(x, 10, WindowGrid(100, 50), source_sample_rate=10))
    # The padded window at 150 already reaches past the end: no window starts at 200.
    assert [s for s, _ in half] == [0, 50, 100, 150]
    np.testing.assert_array_equal(half[-1][1][:80], x[150:])


def test_file_shorter_than_one_window(tmp_path, tagger, model):
    x = _noise(int(0.3 * SR), seed=2)
    sf.write(tmp_path / "short.wav", x, SR, subtype="FLOAT")
    rec = tagger.tag(tmp_path / "short.wav")
    assert rec["segments"] == 1
    assert rec["duration_s"] == pytest.approx(0.3)
    _, ref = _manual_scores(model, x, WIN)
    np.testing.assert_allclose([rec["tags"][t] for t in TAGS], ref[0], atol=2e-6)


@pytest.mark.parametrize("rate", [22050, 11025, 44100])
def test_stereo_and_odd_rates_are_downmixed_and_resampled(tmp_path, tagger, rate):
    x = _noise(int(2.5 * rate), seed=3, channels=2)
    path = tmp_path / f"stereo_{rate}.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    rec = tagger.tag(path)
    assert rec["source_sample_rate"] == rate and rec["source_channels"] == 2
    assert rec["sample_rate"] == SR
    # Reference: downmix and resample the whole array at once.
    ref = tagger.tag(resample(x.mean(axis=1), rate, SR), sample_rate=SR)
    assert rec["segments"] == ref["segments"]
    np.testing.assert_allclose([rec["tags"][t] for t in TAGS], [ref["tags"][t] for t in TAGS], atol=1e-3)
    # And the array API resamples the same way when given the rate.
    arr = tagger.tag(x, sample_rate=rate)
    np.testing.assert_allclose([arr["tags"][t] for t in TAGS], [ref["tags"][t] for t in TAGS], atol=1e-5)


def test_long_file_is_streamed_with_bounded_memory(tmp_path, tagger):
    minutes = 6
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for i in range(minutes):
            f.write(_noise(60 * SR, seed=10 + i) * 0.5)
    decoded_bytes = minutes * 60 * SR * 4
    tracemalloc.start()
    try:
        results = list(tagger.tag_files([str(path)], workers=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (res,) = results
    assert res.error is None
    assert res.record["segments"] == -(-minutes * 60 * SR // WIN)
    assert res.record["duration_s"] == pytest.approx(minutes * 60)
    # Whole-file decoding would need >= 23 MB; streaming needs a few windows.
    assert peak < decoded_bytes / 5, f"peak {peak / 1e6:.1f} MB of traced allocations"


def test_tag_files_batches_across_files_and_reports_bad_ones(tmp_path, tagger):
    good = []
    for i, dur in enumerate([0.4, 2.0, 3.7]):
        p = tmp_path / f"g{i}.wav"
        sf.write(p, _noise(int(dur * SR), seed=20 + i), SR, subtype="FLOAT")
        good.append(str(p))
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "junk.mp3").write_bytes(b"not an mp3 at all" * 50)
    paths = [good[0], str(tmp_path / "empty.mp3"), good[1], str(tmp_path / "junk.mp3"),
             good[2], str(tmp_path / "missing.wav")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {r.path: r for r in tagger.tag_files(paths, workers=0, batch_size=3)}
    assert set(results) == set(paths)
    for p in good:
        single = tagger.tag(p)
        assert results[p].error is None
        assert results[p].record["tags"] == pytest.approx(single["tags"], abs=2e-6)
    for bad in paths[1::2]:
        assert results[bad].error and "\n" not in results[bad].error
        assert results[bad].record["tags"] is None and results[bad].record["error"] == results[bad].error
    assert "empty" in results[str(tmp_path / "empty.mp3")].error


def test_worker_processes_give_the_same_results(tmp_path, tagger):
    paths = []
    for i, dur in enumerate([1.0, 2.6, 0.2, 4.1]):
        p = tmp_path / f"w{i}.flac"
        sf.write(p, _noise(int(dur * 22050), seed=30 + i), 22050)
        paths.append(str(p))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    paths.insert(2, str(tmp_path / "bad.wav"))
    inproc = {r.path: r.record for r in tagger.tag_files(paths, workers=0)}
    pooled = {r.path: r.record for r in tagger.tag_files(paths, workers=2, batch_size=5)}
    assert set(pooled) == set(paths)
    for p in paths:
        assert (pooled[p]["error"] is None) == (inproc[p]["error"] is None)
        if inproc[p]["error"] is None:
            assert pooled[p]["tags"] == pytest.approx(inproc[p]["tags"], abs=1e-6)
            assert pooled[p]["segments"] == inproc[p]["segments"]
    assert pooled[str(tmp_path / "bad.wav")]["error"]


def test_embed_matches_model_layer(tagger, model):
    x = _noise(int(2.2 * WIN), seed=4)
    emb = tagger.embed(x, sample_rate=SR, layer="block3", pool="max")
    wins = np.stack([np.pad(x[s: s + WIN], (0, max(0, s + WIN - len(x)))) for s in (0, WIN, 2 * WIN)])
    with torch.no_grad():
        ref = model.embed(torch.from_numpy(wins).unsqueeze(1), layer="block3", pool="max").numpy()
    np.testing.assert_allclose(emb.windows, ref, atol=1e-5)
    np.testing.assert_allclose(emb.clip, ref.mean(axis=0), atol=1e-5)
    assert emb.windows.shape == (3, model.layer_width("block3"))
    with pytest.raises(ValueError, match="unknown layer"):
        tagger.embed(x, sample_rate=SR, layer="block99")


def test_expand_paths_folders_globs_and_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ["a/1.wav", "a/b/2.MP3", "a/b/notes.txt", "c.flac"]:
        (tmp_path / rel).write_bytes(b"x")
    msgs = []
    found = expand_paths([tmp_path / "a", str(tmp_path / "*.flac"), str(tmp_path / "a" / "1.wav"),
                          str(tmp_path / "gone.wav"), str(tmp_path / "*.ogg")], warn=msgs.append)
    assert found == [str(tmp_path / "a/1.wav"), str(tmp_path / "a/b/2.MP3"), str(tmp_path / "c.flac"),
                     str(tmp_path / "gone.wav")]
    assert len(msgs) == 1 and "*.ogg" in msgs[0]
    with pytest.raises(ValueError, match="no audio files"):
        expand_paths([str(tmp_path / "*.ogg")])


def test_real_mtat_clip(shared_dir, tagger):
    clips = sorted((shared_dir / "data" / "real").glob("*.mp3"))
    if not clips:
        pytest.skip("no real MP3 in ../shared/data/real")
    rec = tagger.tag(clips[0])
    assert rec["error"] is None
    assert 28.0 < rec["duration_s"] < 30.0
    assert rec["segments"] == -(-round(rec["duration_s"] * SR) // WIN)
    assert all(0.0 <= v <= 1.0 for v in rec["tags"].values())


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_optimized_inference_path_gives_the_same_scores(backend):
    # BN statistics away from (0, 1), so that a wrong fusion cannot pass by accident.
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0).eval()
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = _noise(int(2.5 * WIN), seed=6)
    fast = Tagger.from_model(model, backend=backend)
    assert type(fast.runner).__name__ == ("OrtRunner" if backend == "onnxruntime" else "TorchRunner")
    # The reference: the plain model's forward pass on the three windows (the last one
    # zero-padded), sigmoid, mean: no runner, no grid, no aggregation code involved.
    padded = np.zeros(3 * WIN, np.float32)
    padded[: len(x)] = x
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(padded.reshape(3, 1, WIN)))).mean(0).numpy()
    got = fast.tag(x, sample_rate=SR)
    assert got["segments"] == 3
    assert [got["tags"][t] for t in TAGS] == pytest.approx(ref.tolist(), abs=1e-5)
