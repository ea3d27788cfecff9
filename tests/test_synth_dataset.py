"""Synthetic data set writer: CSV-folder format, determinism, resume, CLI and errors."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn.commands import synth as synth_cmd
from samplecnn.synth import TAGS, assign_splits, clip_score, generate_dataset, label_vector
from samplecnn.synth import dataset as ds

OPTS = dict(clips=6, seconds=1.0, sample_rate=8000, seed=11)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ref") / "synth", **OPTS)


def test_csv_folder_layout(reference):
    with open(reference / "annotations.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        header = next(csv.reader(f))
    assert header == ["path", "clip_id", "split", "group"] + TAGS
    assert (reference / "tags.txt").read_text(encoding="utf-8").split("\n")[:-1] == TAGS
    assert len(rows) == OPTS["clips"]
    scores = [json.loads(line) for line in (reference / "scores.jsonl").read_text().splitlines()]
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["seed"] == OPTS["seed"] and meta["renderer"] == "numpy" and meta["tags"] == TAGS
    for i, row in enumerate(rows):
        score = clip_score(OPTS["seed"], i, "medium", OPTS["seconds"])
        assert [int(row[t]) for t in TAGS] == label_vector(score).tolist()
        assert scores[i]["clip_id"] == row["clip_id"] and scores[i]["tempo"] == round(score.tempo, 3)
        assert row["split"] in ("train", "valid", "test") and row["group"] == row["clip_id"]
        info = sf.info(str(reference / row["path"]))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 8000, 1, "PCM_16")
        audio, _ = sf.read(str(reference / row["path"]), dtype="float32")
        expected = ds.render(score, 8000, 1.0)
        assert np.max(np.abs(audio - expected)) < 2 / 32768  # the same render, quantised to 16 bits


def test_splits_are_seeded_and_sized():
    a = assign_splits(100, 3)
    assert a == assign_splits(100, 3) and a != assign_splits(100, 4)
    assert (a.count("train"), a.count("valid"), a.count("test")) == (70, 10, 20)
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(10, 0, (0.5, 0.5, 0.5))


def test_same_seed_byte_identical_any_worker_count(reference, tmp_path):
    again = generate_dataset(tmp_path / "again", workers=2, **OPTS)
    assert _files(again) == _files(reference)
    other = generate_dataset(tmp_path / "other", **{**OPTS, "seed": 12})
    assert _files(other)["audio/000000.wav"] != _files(reference)["audio/000000.wav"]


def test_interrupted_run_resumes_to_identical_output(reference, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real = ds._render_one
    calls = []

    def flaky(job):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(job[0])
        return real(job)

    monkeypatch.setattr(ds, "_render_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, **OPTS)
    monkeypatch.setattr(ds, "_render_one", real)
    assert not (out / "annotations.csv").exists()
    assert len(list((out / "audio").glob("*.wav"))) == 3
    # what a kill mid-write leaves behind, and a damaged finished clip
    (out / "audio" / ".000004.wav.partial").write_bytes(b"RIFF half")
    (out / "audio" / "000001.wav").write_bytes(b"garbage")
    rendered = []
    monkeypatch.setattr(ds, "_render_one", lambda job: rendered.append(job[0]) or real(job))
    generate_dataset(out, **OPTS)
    assert sorted(rendered) == [1, 3, 4, 5]  # only the missing and the damaged clips
    assert _files(out) == _files(reference)


def test_refuses_mismatched_or_foreign_folders(reference, tmp_path):
    with pytest.raises(ValueError, match=r"different options \(seed\)"):
        generate_dataset(reference, **{**OPTS, "seed": 99})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a synth data set"):
        generate_dataset(foreign, **OPTS)
    for bad, match in (({"clips": 0}, "clips"), ({"seconds": -1}, "seconds"),
                       ({"sample_rate": 100}, "sample rate"), ({"renderer": "midi"}, "renderer"),
                       ({"difficulty": "x"}, "difficulty"), ({"audio_format": "ogg"}, "format")):
        with pytest.raises(ValueError, match=match):
            generate_dataset(tmp_path / "bad", **{**OPTS, **bad})


def test_flac_format(tmp_path):
    out = generate_dataset(tmp_path / "flac", **{**OPTS, "clips": 2}, audio_format="flac")
    info = sf.info(str(out / "audio" / "000000.flac"))
    assert info.format == "FLAC" and info.frames == 8000


def _parse(argv):
    parser = argparse.ArgumentParser()
    synth_cmd.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = _parse(["synth", str(out), "--clips", "3", "--seconds", "0.5", "--sample-rate", "8000",
                   "--seed", "2", "--difficulty", "hard", "--no-progress"])
    assert args.func(args) == 0
    assert "wrote 3 clips" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["clips"], meta["difficulty"], meta["seed"]) == (3, "hard", 2)
    with pytest.raises(SystemExit):
        _parse(["synth", str(out), "--renderer", "midi"])
