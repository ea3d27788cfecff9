"""Audio decoding, resampling, failures and streaming windows."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn.audio import (AUDIO_EXTENSIONS, AudioError, SilentAudioWarning, load_audio,
                             probe, resample, stream_blocks, to_mono)
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


def stream_windows(source, sample_rate, window, hop, last="pad", *, source_sample_rate=None,
                   warnings=None):
    """The one feeder (`tagging.sources.iter_windows`) as these tests call it."""
    from samplecnn.tagging.sources import StreamInfo, iter_windows
    from samplecnn.windows import WindowGrid

    info = StreamInfo()
    if isinstance(source, np.ndarray) and source_sample_rate is None:
        source_sample_rate = sample_rate
    yield from iter_windows(source, sample_rate, WindowGrid(window, hop, last),
                            source_sample_rate=source_sample_rate, info=info)
    if warnings is not None:
        warnings.extend(info.warnings)


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


# ------------------------------------------------------------- decoder output, truncation
def _corrupt_mp3(path: Path, seconds: float = 6.0) -> Path:
    """An MP3 whose middle frame header has 8 bytes inverted: libmpg123 meets an illegal
    frame header there, resyncs and goes on."""
    whole = write_audio(path.with_name("whole_" + path.name), tone(seconds, 16000, seed=7), 16000)
    data = bytearray(whole.read_bytes())
    mid = next(i for i in range(len(data) // 2, len(data) - 1)
               if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0)  # a frame sync
    for k in range(mid, mid + 8):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_mp3_read_in_blocks_equals_the_whole_file_and_a_clean_one_has_no_warnings(tmp_path):
    # soundfile seeks after every read; for MP3 that restarted libmpg123 at each block
    # boundary ("part2_3_length too large") and changed the samples there.
    p = write_audio(tmp_path / "clean.mp3", tone(6.0, 16000, seed=7), 16000)
    whole = load_audio(p, 16000)
    got = []
    blocks = np.concatenate(list(stream_blocks(p, 16000, got)))
    assert whole.warnings == [] and got == []
    assert len(blocks) == len(whole.samples) > 65536
    np.testing.assert_array_equal(blocks, whole.samples)
    if REAL.exists():
        real = []
        n = sum(len(b) for b in stream_blocks(REAL, 22050, real))
        assert real == [] and n == len(load_audio(REAL, 22050).samples)


def test_damaged_mp3_becomes_warnings_of_that_file(tmp_path):
    p = _corrupt_mp3(tmp_path / "bad.mp3")
    a = load_audio(p, 16000)
    assert len(a.samples) > 0
    decoder = [w for w in a.warnings if w.startswith("decoder: ")]
    assert decoder and any("Illegal Audio-MPEG-Header" in w for w in decoder)
    # Bookkeeping lines of the resync are dropped, and nothing keeps libmpg123's prefixes.
    assert not any("resync" in w.lower() or "Skipped" in w or "[src/" in w for w in a.warnings)
    streamed = []
    for _ in stream_windows(p, 16000, 16000, 16000, warnings=streamed):
        pass
    assert streamed == a.warnings


@pytest.mark.parametrize("ext", [".wav", ".aiff", ".flac", ".mp3"])
def test_truncated_file_decodes_what_is_there_with_one_warning(tmp_path, ext):
    whole = write_audio(tmp_path / f"whole{ext}", tone(4.0, 16000, seed=5), 16000)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    a = load_audio(cut, 16000)
    assert 1.0 < a.duration_s < 3.0
    trunc = [w for w in a.warnings if w.startswith("truncated:")]
    assert len(trunc) == 1 and "4.0" in trunc[0], a.warnings
    streamed = []
    n = sum(len(b) for b in stream_blocks(cut, 16000, streamed))
    assert streamed == a.warnings and n == len(a.samples)
    assert load_audio(whole, 16000).warnings == []


_THREADS_AND_FORKS = r"""
import json, multiprocessing as mp, sys, threading
from samplecnn.audio import load_audio, stream_blocks

clean, bad = sys.argv[1], sys.argv[2]

def decode(path):
    a = load_audio(path, 16000)
    w = []
    for _ in stream_blocks(path, 16000, w):
        pass
    return [a.warnings, w]

out = {clean: [], bad: []}
def work():
    for _ in range(4):
        for p in (clean, bad):
            out[p].append(decode(p))

threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
with mp.get_context("fork").Pool(2) as pool:   # forks while the threads decode
    forked = pool.map(decode, [clean, bad] * 3)
for k in range(100):
    print(f"ours {k}", file=sys.stderr, flush=True)
for t in threads:
    t.join()
print(json.dumps({"threads": out, "forked": forked}))
"""


def test_decoder_chatter_never_reaches_stderr_from_threads_or_forks(tmp_path):
    import json
    import os
    import subprocess
    import sys

    clean = write_audio(tmp_path / "clean.mp3", tone(6.0, 16000, seed=7), 16000)
    bad = _corrupt_mp3(tmp_path / "bad.mp3")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run([sys.executable, "-c", _THREADS_AND_FORKS, str(clean), str(bad)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    # Only the script's own text: decoder lines were captured, other threads' lines that
    # met a capture were handed back, none lost or doubled. (A line written by another
    # thread across a swap can come back split from its newline, so text is compared,
    # not line breaks.)
    import re

    assert sorted(re.findall(r"ours \d+", proc.stderr)) == sorted(f"ours {k}" for k in range(100))
    assert re.sub(r"ours \d+|\s", "", proc.stderr) == ""
    res = json.loads(proc.stdout)
    ref = load_audio(bad, 16000).warnings
    assert ref
    for a_warn, s_warn in res["threads"][str(clean)]:
        assert a_warn == [] and s_warn == []
    for a_warn, s_warn in res["threads"][str(bad)]:
        assert a_warn == ref and s_warn == ref
    assert res["forked"] == [[[], []], [ref, ref]] * 3


def test_names_that_are_not_utf8_open_and_fail_in_one_printable_line(tmp_path):
    import os

    raw = os.fsencode(tmp_path) + b"/bad\xffname.wav"
    try:
        open(raw, "wb").close()
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    sf.write(raw, tone(0.5, 16000, seed=4), 16000)
    name = os.fsdecode(raw)  # what os.listdir / Path.iterdir hand out
    a = load_audio(name, 16000)
    np.testing.assert_array_equal(load_audio(raw, 16000).samples, a.samples)
    assert probe(name).frames == 8000 and a.warnings == []
    assert sum(1 for _ in stream_windows(name, 16000, 4000, 4000)) == 2
    gone = os.fsdecode(os.fsencode(tmp_path) + b"/gone\xff.mp3")
    with pytest.raises(AudioError) as err:
        load_audio(gone, 16000)
    text = str(err.value)
    assert text.endswith("gone\\xff.mp3: file not found") and "\n" not in text
    text.encode("utf-8")  # printable and writable as it is
    assert err.value.path == gone


def test_a_badly_damaged_mp3_gives_at_most_five_decoder_lines_and_a_count(tmp_path):
    p = write_audio(tmp_path / "whole.mp3", tone(8.0, 16000, seed=7), 16000)
    data = bytearray(p.read_bytes())
    syncs = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0]
    for s in syncs[10::12][:12]:  # a dozen frame headers inverted along the file
        for k in range(s, s + 4):
            data[k] ^= 0xFF
    (tmp_path / "bad.mp3").write_bytes(bytes(data))
    a = load_audio(tmp_path / "bad.mp3", 16000)
    decoder = [w for w in a.warnings if w.startswith("decoder: ")]
    assert len(decoder) == 6 and len(set(decoder)) == 6
    assert decoder[-1].startswith("decoder: and ") and decoder[-1].endswith(" more message(s)")
    assert len(a.samples) > 0.5 * 8 * 16000
