"""Audio decoding, resampling, failures and streaming windows."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn.audio import (AUDIO_EXTENSIONS, AudioError, SilentAudioWarning, load_audio,
                             probe, resample, stream_windows, to_mono)
from samplecnn.testing.datasets import make_bad_files, tone, write_audio

REAL = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
        / "joram-moments_of_clarity-08-solipsism-59-88.mp3")


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_formats_decode_to_mono_float32_at_target_rate(tmp_path, ext):
    assert ext in AUDIO_EXTENSIONS
    x = tone(1.0, 16000, seed=3)
    stereo = np.stack([x, 0.5 * x], axis=1)
    p = write_audio(tmp_path / f"a{ext}", stereo, 16000)
    a = load_audio(p, 22050)
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.source_sample_rate == 16000 and a.source_channels == 2
    # Lossy codecs pad/trim a little at the edges; the rate conversion must hold.
    assert abs(len(a.samples) - 22050) <= 0.06 * 22050
    assert abs(a.duration_s - len(a.samples) / 22050) < 1e-3
    assert not a.padded and not a.silent
    if ext in (".wav", ".flac"):
        # Lossless: the downmix is the mean of channels.
        ref = resample(0.75 * x, 16000, 22050)
        assert np.abs(a.samples - ref).max() < 1e-3


def test_to_mono_and_resample():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_allclose(to_mono(x), x.mean(axis=1))
    assert to_mono(x[:, 0]).shape == (6,)
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))
    y = tone(0.5, 8000)
    z = resample(y, 8000, 16000)
    assert len(z) == 2 * len(y) and z.dtype == np.float32
    assert resample(y, 8000, 8000) is not None and len(resample(y, 8000, 8000)) == len(y)


def test_every_bad_file_gives_audioerror_with_path_and_reason(tmp_path):
    bad = make_bad_files(tmp_path)
    for name, (path, reason) in bad.items():
        with pytest.raises(AudioError) as info:
            load_audio(path, 22050)
        err = info.value
        assert isinstance(err, ValueError)
        assert err.path == str(path), name
        assert reason in err.reason, (name, err.reason)
        assert str(err) == f"{path}: {err.reason}"
        assert "\n" not in str(err)
        # Errors survive the trip back from a worker process.
        again = pickle.loads(pickle.dumps(err))
        assert str(again) == str(err) and again.reason == err.reason


def test_silence_is_valid_with_warning_and_short_audio_is_padded(tmp_path):
    p = write_audio(tmp_path / "silent.wav", np.zeros(8000, np.float32), 16000)
    with pytest.warns(SilentAudioWarning, match="digital silence"):
        a = load_audio(p, 16000)
    assert a.silent and len(a.samples) == 8000
    p = write_audio(tmp_path / "short.wav", tone(0.25, 16000), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = load_audio(p, 16000, min_samples=59049)
    assert a.padded and len(a.samples) == 59049
    assert a.duration_s == pytest.approx(0.25)
    assert np.any(a.samples[:4000]) and not np.any(a.samples[4000:])
    b = load_audio(p, 16000, min_samples=100)
    assert not b.padded and len(b.samples) == 4000


def test_real_clip_trusts_decoded_length_not_header():
    if not REAL.exists():
        pytest.skip("shared real clip not available")
    info = probe(REAL)
    assert info.sample_rate == 16000 and info.channels == 1
    assert info.duration_s == pytest.approx(29.271, abs=1e-3)
    a = load_audio(REAL, 16000)
    assert len(a.samples) == 465_984
    assert a.duration_s == pytest.approx(465_984 / 16000)


def test_stream_windows_match_whole_file_decoding(tmp_path):
    x = tone(7.3, 16000, seed=5)
    p = write_audio(tmp_path / "long.flac", x, 16000)
    whole = load_audio(p, 22050).samples
    window, hop = 22050, 11025
    wins = list(stream_windows(p, 22050, window, hop))
    starts = [s for s, _ in wins]
    assert starts == list(range(0, starts[-1] + 1, hop))
    # Full windows while they fit, then exactly one padded window covering the tail.
    n_full = (len(whole) - window) // hop + 1
    assert len(wins) == n_full + 1
    for s, w in wins:
        assert w.shape == (window,) and w.dtype == np.float32
        seg = whole[s : s + window]
        np.testing.assert_allclose(w[: len(seg)], seg, atol=1e-4)
        assert not np.any(w[len(seg):])
    assert len(list(stream_windows(p, 22050, window, hop, last="drop"))) == n_full


def test_stream_windows_short_source_and_arrays(tmp_path):
    p = write_audio(tmp_path / "short.wav", tone(0.1, 16000), 16000)
    wins = list(stream_windows(p, 16000, 4000, 4000))
    assert len(wins) == 1 and wins[0][0] == 0
    assert np.any(wins[0][1][:1600]) and not np.any(wins[0][1][1600:])
    # Under "drop" too a source shorter than one window gets its one padded window.
    dropped = list(stream_windows(p, 16000, 4000, 4000, last="drop"))
    assert len(dropped) == 1 and np.array_equal(dropped[0][1], wins[0][1])
    x = tone(1.0, 8000)
    arr_wins = list(stream_windows(x, 16000, 4000, 4000, source_sample_rate=8000))
    ref = resample(x, 8000, 16000)
    assert len(arr_wins) == 4
    np.testing.assert_allclose(np.concatenate([w for _, w in arr_wins]), ref, atol=1e-6)
    with pytest.raises(ValueError):
        list(stream_windows(x, 16000, 0, 10))


def test_stream_windows_bad_files_raise_audioerror(tmp_path):
    bad = make_bad_files(tmp_path)
    for name in ("missing", "empty", "not_audio", "header_only", "nan"):
        path, reason = bad[name]
        with pytest.raises(AudioError, match=reason):
            list(stream_windows(path, 16000, 1000, 1000))


def test_stream_windows_memory_is_bounded(tmp_path):
    # 60 s at 44.1 kHz stereo is 21 MB as float32; the generator must never hold it.
    import tracemalloc

    n = 44100 * 60
    x = np.zeros((n, 2), np.float32)
    x[::97] = 0.1
    p = tmp_path / "long.wav"
    sf.write(p, x, 44100, subtype="PCM_16")
    del x
    tracemalloc.start()
    count = 0
    for _, w in stream_windows(p, 22050, 59049, 59049):
        count += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == int(np.ceil(22050 * 60 / 59049))
    assert peak < 8 * 2**20, peak
