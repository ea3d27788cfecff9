"""Synthetic benchmark: score sampling, tag rules, label statistics and what the audio shows."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from samplecnn.synth import (DIFFICULTIES, INSTRUMENTS, LEVEL_DBFS, TAG_RULES, TAGS, Drums, Part,
                             label_vector, render, render_dry, sample_score, score_tags)
from samplecnn.synth.score import CLASSICAL_INSTRUMENTS, SYNTHS, VOICES

N_STATS = 1500


@pytest.fixture(scope="module")
def scores():
    return [sample_score(np.random.default_rng([123, i])) for i in range(N_STATS)]


@pytest.fixture(scope="module")
def labels(scores):
    return np.stack([label_vector(s) for s in scores])


def _expected(s) -> set[str]:
    """The tag rules restated from the documentation table, independently of tags.py."""
    inst = set(s.instruments)
    drums = s.drums is not None
    out = set()
    out |= {"drums"} if drums else {"no drums"}
    out.add(s.mode)
    out |= {"vocal"} if inst & set(VOICES) else {"no vocals"}
    if not drums and inst <= set(CLASSICAL_INSTRUMENTS):
        out.add("classical")
    simple = {"piano": "piano", "violin": "violin", "flute": "flute", "harpsichord": "harpsichord",
              "organ": "organ", "cello": "cello", "choir": "choir", "sitar": "sitar",
              "female_voice": "female", "male_voice": "male", "acoustic_guitar": "guitar",
              "electric_guitar": "guitar", "strings": "strings", "bass": "bass",
              "synth_bass": "bass", "tanpura": "indian"}
    out |= {simple[i] for i in inst if i in simple}
    if inst & {"violin", "cello"}:
        out.add("strings")
    if "sitar" in inst:
        out.add("indian")
    if inst & set(SYNTHS):
        out |= {"synth", "electronic"}
    if drums and s.drums.kit == "electronic":
        out.add("electronic")
    if s.tempo <= 80:
        out.add("slow")
    if s.tempo >= 135:
        out.add("fast")
    if s.dynamics in ("loud", "quiet"):
        out.add(s.dynamics)
    if len(s.parts) == 1 and not drums:
        out.add("solo")
    if drums and s.drums.pattern == "rock" and "electric_guitar" in inst:
        out.add("rock")
    if not drums and s.tempo <= 90 and "synth_pad" in inst:
        out.add("ambient")
    if drums and s.drums.pattern == "four_on_floor" and inst & set(SYNTHS) and s.tempo >= 118:
        out.add("techno")
    return out


def test_tag_set_matches_rules():
    assert len(TAGS) >= 20 and len(set(TAGS)) == len(TAGS)
    assert set(TAGS) == set(TAG_RULES)


def test_every_rule_on_sampled_scores(scores):
    for s in scores:
        assert set(score_tags(s)) == _expected(s), s.to_dict()


def test_rule_thresholds_on_edited_scores(scores):
    s = next(x for x in scores if x.drums is None and "synth_pad" in x.instruments)
    assert "fast" in score_tags(dataclasses.replace(s, tempo=135.0))
    assert "fast" not in score_tags(dataclasses.replace(s, tempo=134.9))
    assert "slow" in score_tags(dataclasses.replace(s, tempo=80.0))
    assert "ambient" in score_tags(dataclasses.replace(s, tempo=90.0))
    assert "ambient" not in score_tags(dataclasses.replace(s, tempo=90.1))
    with_drums = dataclasses.replace(s, tempo=125.0, drums=Drums("electronic", "four_on_floor", 0.0))
    assert {"techno", "drums", "electronic"} <= set(score_tags(with_drums))
    assert "ambient" not in score_tags(with_drums)
    solo = dataclasses.replace(s, parts=[Part("piano", "solo", 0.0)])
    assert {"solo", "classical", "piano"} <= set(score_tags(solo))


def test_label_statistics(labels):
    freq = labels.mean(axis=0)
    # every tag occurs and is absent often enough to be learnable and measurable
    assert freq.min() > 0.03 and freq.max() < 0.8, dict(zip(TAGS, freq.round(3)))
    # skewed like real tag data
    assert freq.max() / freq.min() > 5
    # TAGS is ordered most frequent first (up to sampling noise)
    assert np.all(np.diff(freq) < 0.05), dict(zip(TAGS, freq.round(3)))
    # multi-label: clips carry several tags
    assert 4 <= labels.sum(axis=1).mean() <= 12
    col = {t: labels[:, i].astype(bool) for i, t in enumerate(TAGS)}
    for a, b in (("techno", "electronic"), ("techno", "drums"), ("rock", "guitar"),
                 ("violin", "strings"), ("sitar", "indian"), ("female", "vocal"),
                 ("ambient", "synth"), ("classical", "no drums"), ("solo", "no drums")):
        assert np.all(col[b][col[a]]), f"{a} should imply {b}"
    for a, b in (("major", "minor"), ("drums", "no drums"), ("vocal", "no vocals")):
        assert np.all(col[a] ^ col[b])
    for a, b in (("fast", "slow"), ("loud", "quiet"), ("techno", "classical")):
        assert not np.any(col[a] & col[b])
    # co-occurrence beyond the implications: genres change instrument odds
    assert col["strings"][col["classical"]].mean() > 1.5 * col["strings"].mean()
    assert col["loud"][col["rock"]].mean() > 1.5 * col["loud"].mean()


def test_difficulty_changes_mix_and_polyphony():
    by = {d: [sample_score(np.random.default_rng([5, i]), d) for i in range(400)] for d in DIFFICULTIES}
    snr = {d: np.mean([s.mix.snr_db for s in v]) for d, v in by.items()}
    parts = {d: np.mean([len(s.parts) for s in v]) for d, v in by.items()}
    assert snr["easy"] > snr["medium"] > snr["hard"]
    assert parts["hard"] > parts["medium"]
    with pytest.raises(ValueError, match="difficulty"):
        sample_score(np.random.default_rng(0), "extreme")


def test_score_is_deterministic_and_json_safe():
    import json
    a = sample_score(np.random.default_rng([9, 3]))
    b = sample_score(np.random.default_rng([9, 3]))
    assert a == b
    json.dumps(a.to_dict())


@pytest.mark.parametrize("inst", sorted(INSTRUMENTS))
def test_every_instrument_sounds_at_its_pitch(inst, scores):
    """One sustained A (MIDI 57 or in range): strongest spectral peak is a harmonic of f0."""
    lo, hi = INSTRUMENTS[inst][1:]
    pitch = 57 if lo <= 57 <= hi else lo + 12
    f0 = 440 * 2 ** ((pitch - 69) / 12)
    base = scores[0]
    score = dataclasses.replace(base, parts=[Part(inst, "melody", 0.0, [(0.0, 0.9, float(pitch), 0.8)])],
                                drums=None, seconds=1.0)
    sr = 16000
    y = render_dry(score, sr)
    assert y.shape == (sr,) and np.all(np.isfinite(y)) and np.abs(y).max() > 0
    seg = y[2000:14000] * np.hanning(12000)
    spec = np.abs(np.fft.rfft(seg, 1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / sr)
    peak = freqs[np.argmax(spec[freqs > 40]) + np.sum(freqs <= 40)]
    fund = f0 / 2 if inst == "organ" else f0  # the organ's 16' stop sounds an octave down
    ratio = peak / fund
    assert abs(ratio - round(ratio)) < 0.06 and round(ratio) >= 1, (inst, peak, fund)


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)) + 1e-12)


def test_loud_and_quiet_levels(scores):
    loud = [s for s in scores if s.dynamics == "loud"][:5]
    quiet = [s for s in scores if s.dynamics == "quiet"][:5]
    loud_db = [_rms_db(render(dataclasses.replace(s, seconds=1.5), 16000)) for s in loud]
    quiet_db = [_rms_db(render(dataclasses.replace(s, seconds=1.5), 16000)) for s in quiet]
    assert min(loud_db) > max(quiet_db) + 10
    assert all(abs(d - LEVEL_DBFS["quiet"]) < 4 for d in quiet_db)


def test_render_output_contract(scores):
    y = render(dataclasses.replace(scores[1], seconds=1.25), 8000)
    assert y.dtype == np.float32 and y.shape == (10000,)
    assert np.abs(y).max() <= 1.0 and np.all(np.isfinite(y))
    assert np.array_equal(y, render(dataclasses.replace(scores[1], seconds=1.25), 8000))
    with pytest.raises(ValueError, match="sample rate"):
        render(scores[1], 1000)


def test_drums_are_audible_transients_at_the_tempo(scores):
    s = next(x for x in scores if x.drums is not None and x.drums.pattern == "rock")
    s = dataclasses.replace(s, seconds=4.0, drums=dataclasses.replace(
        s.drums, hits=[h for h in s.drums.hits if h[0] < 4.0]))
    sr, hop = 16000, 160
    track = render_dry(s, sr) - render_dry(dataclasses.replace(s, drums=None), sr)
    frames = track[: len(track) // hop * hop].reshape(-1, hop)
    energy = np.sqrt((frames ** 2).mean(axis=1))
    onset = np.maximum(np.diff(energy), 0)
    # energy rises right at the scored hits, not in between
    hit_frames = np.array([int(t * sr / hop) for t, _, _ in s.drums.hits if t > 0.02])
    at_hits = np.mean([onset[max(f - 2, 0): f + 2].max() for f in hit_frames if f + 2 < len(onset)])
    assert at_hits > 5 * np.median(onset)
    # the onset envelope repeats at the beat (or a simple multiple of it)
    ac = np.correlate(onset - onset.mean(), onset - onset.mean(), "full")[len(onset) - 1:]
    lo, hi = int(0.2 * sr / hop), int(2.0 * sr / hop)
    period = (lo + np.argmax(ac[lo:hi])) * hop / sr
    beat = 60 / s.tempo
    assert min(abs(period / (beat * m) - 1) for m in (0.5, 1, 2, 4)) < 0.06, (period, beat)


def test_fast_scores_have_denser_notes(scores):
    def rate(s):
        onsets = {round(n[0], 2) for p in s.parts for n in p.notes if 0 <= n[0] < s.seconds}
        return len(onsets) / s.seconds
    fast = [rate(s) for s in scores if "fast" in score_tags(s)]
    slow = [rate(s) for s in scores if "slow" in score_tags(s)]
    assert np.median(fast) > 1.5 * np.median(slow)
