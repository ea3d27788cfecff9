"""FluidSynth renderer: MIDI export always; audio only where fluidsynth and a GM SoundFont exist."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from samplecnn.synth import clip_score, generate_dataset
from samplecnn.synth.soundfont import render_soundfont, score_to_midi, soundfont_available

needs_fluidsynth = pytest.mark.skipif(not soundfont_available(),
                                      reason="fluidsynth or a General MIDI SoundFont not installed")


def _note_ons(midi: bytes) -> int:
    """Count note-on events with velocity > 0 by walking the single track."""
    assert midi[:4] == b"MThd" and midi[14:18] == b"MTrk"
    length = struct.unpack(">I", midi[18:22])[0]
    data, pos, count, status = midi[22:22 + length], 0, 0, 0
    assert len(data) == length and data.endswith(b"\xff\x2f\x00")
    while pos < len(data):
        while data[pos] & 0x80:  # delta time
            pos += 1
        pos += 1
        if data[pos] == 0xFF:
            pos += 3 + data[pos + 2]
            continue
        status = data[pos]
        kind = status & 0xF0
        if kind == 0x90 and data[pos + 2] > 0:
            count += 1
        pos += 2 if kind == 0xC0 else 3
    return count


def test_midi_export_has_every_note_in_the_clip():
    score = clip_score(4, next(i for i in range(50) if clip_score(4, i, "medium", 3.0).drums), "medium", 3.0)
    n_notes = sum(1 for p in score.parts for n in p.notes if n[0] >= 0) + len(score.drums.hits)
    assert _note_ons(score_to_midi(score)) == n_notes


@needs_fluidsynth
def test_soundfont_render_is_deterministic_and_leveled():
    score = dataclasses.replace(clip_score(1, 2, "medium", 1.5), seconds=1.5)
    a = render_soundfont(score, 16000)
    assert a.dtype == np.float32 and a.shape == (24000,) and np.all(np.isfinite(a))
    assert np.array_equal(a, render_soundfont(score, 16000))
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) > 1e-3


@needs_fluidsynth
def test_soundfont_dataset(tmp_path):
    """The dataset's audio is FluidSynth's rendering of each clip's score: same clips and
    labels as the NumPy renderer's dataset, other audio, every clip whole and audible."""
    import csv

    import soundfile as sf

    kw = dict(clips=2, seconds=1.0, sample_rate=16000, seed=0)
    out = generate_dataset(tmp_path / "sf", renderer="soundfont", **kw)
    ref = generate_dataset(tmp_path / "np", renderer="numpy", **kw)
    with open(out / "annotations.csv", newline="") as f, open(ref / "annotations.csv", newline="") as g:
        rows, ref_rows = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert len(rows) == 2 and rows == ref_rows  # labels come from the scores, not the renderer
    for row in rows:
        x, sr = sf.read(out / row["path"], dtype="float32")
        y, _ = sf.read(ref / row["path"], dtype="float32")
        assert sr == 16000 and x.shape == (16000,)
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-3
        assert np.abs(x - y).max() > 1e-2  # FluidSynth's audio, not the NumPy renderer's
