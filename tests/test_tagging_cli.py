"""`samplecnn tag` / `samplecnn embed`: formats, bad files, exit status, resume, taggrams."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from samplecnn.cli import main
from samplecnn.testing.datasets import write_noise, write_tiny_checkpoint
from samplecnn.tagging import Tagger

TAGS = ["rock", "piano", "quiet", "male vocal"]
SR = 16000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=1)


@pytest.fixture
def folder(tmp_path):
    """Good files in nested folders, plus an empty MP3, a junk MP3 and a truncated WAV."""
    root = tmp_path / "music"
    good = [write_noise(root / "a.wav", 2.0, 1), write_noise(root / "sub" / "b.flac", 0.5, 2, rate=22050),
            write_noise(root / "sub" / "c.wav", 3.0, 3)]
    (root / "empty.mp3").write_bytes(b"")
    (root / "sub" / "junk.mp3").write_bytes(b"\x00\x01garbage" * 200)
    whole = (root / "a.wav").read_bytes()
    (root / "trunc.wav").write_bytes(whole[:30])
    bad = [str(root / "empty.mp3"), str(root / "sub" / "junk.mp3"), str(root / "trunc.wav")]
    return root, good, bad


def _records(text, fmt):
    if fmt == "json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats_report_good_and_bad_files(ckpt, folder, tmp_path, capsys, fmt):
    root, good, bad = folder
    out = tmp_path / f"out.{fmt}"
    code = main(["tag", ckpt, str(root), "--format", fmt, "--output", str(out), "--top-k", "2",
                 "--workers", "0"])
    assert code == 1  # some files failed
    err = capsys.readouterr().err
    for b in bad:
        assert b in err
    recs = {r["path"]: r for r in _records(out.read_text(), fmt)}
    assert set(recs) == set(good) | set(bad)
    tagger = Tagger.from_checkpoint(ckpt)
    for g in good:
        r = recs[g]
        assert r["error"] is None and r["sample_rate"] == SR and r["segments"] >= 1
        assert list(r["tags"]) == TAGS
        assert r["tags"] == pytest.approx(tagger.tag(g)["tags"], abs=1e-6)
        assert len(r["top"]) == 2 and r["top"][0][1] == max(r["tags"].values())
    for b in bad:
        assert isinstance(recs[b]["error"], str) and recs[b]["tags"] is None and recs[b]["top"] == []


def test_csv_has_a_row_per_file_and_a_column_per_tag(ckpt, folder, tmp_path):
    root, good, bad = folder
    out_csv, out_json = tmp_path / "o.csv", tmp_path / "o.json"
    assert main(["tag", ckpt, str(root), "--format", "csv", "-o", str(out_csv), "--workers", "0", "-q"]) == 1
    assert main(["tag", ckpt, str(root), "--format", "json", "-o", str(out_json), "--workers", "0", "-q"]) == 1
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "duration_s", "sample_rate", "segments", "error", "labels"] + TAGS
    by_path = {r["path"]: r for r in rows}
    ref = {r["path"]: r for r in json.loads(out_json.read_text())}
    assert [r["path"] for r in rows] == [r["path"] for r in json.loads(out_json.read_text())]
    for p, r in by_path.items():
        if p in good:
            assert r["error"] == ""
            for t in TAGS:
                assert float(r[t]) == pytest.approx(ref[p]["tags"][t])
        else:
            assert r["error"] and all(r[t] == "" for t in TAGS)


def test_all_good_exits_zero_and_stdout_json(ckpt, folder, capsys):
    _, good, _ = folder
    assert main(["tag", ckpt, *good, "--workers", "0"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in recs] == good


def test_resume_skips_done_files_and_retries_failed_ones(ckpt, tmp_path, capsys):
    root = tmp_path / "r"
    a, b = write_noise(root / "a.wav", 1.0, 5), write_noise(root / "b.wav", 1.5, 6)
    broken = root / "c.wav"
    broken.write_bytes(b"RIFF....WAVEfmt ")
    out = tmp_path / "tags.jsonl"
    assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--workers", "0", "-q"]) == 1
    first = {json.loads(x)["path"]: x for x in out.read_text().splitlines()}
    assert json.loads(first[str(broken)])["error"]
    # A killed run leaves a torn last line; the broken file gets repaired; a new file appears.
    with open(out, "a") as f:
        f.write('{"path": "' + str(root / "zzz.wav") + '", "tags": {"ro')
    write_noise(broken, 0.7, 7)
    d = write_noise(root / "d.wav", 0.9, 8)
    capsys.readouterr()
    assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--resume",
                 "--workers", "0"]) == 0
    assert "2 file(s) already done" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    recs = [json.loads(x) for x in lines]  # every line parses: the torn one is gone
    assert sorted(r["path"] for r in recs) == sorted([a, b, str(broken), d])
    assert all(r["error"] is None for r in recs)
    assert lines[:2] == [first[a], first[b]]  # done files kept verbatim, not recomputed
    with pytest.raises(SystemExit):
        main(["tag", ckpt, a, "--resume", "--badflag"])
    assert main(["tag", ckpt, a, "--resume"]) == 2  # resume needs jsonl + --output


def test_taggram_dir_writes_csv_and_png(ckpt, tmp_path):
    p = write_noise(tmp_path / "in" / "song.wav", 4.0, 9)
    out = tmp_path / "tg"
    assert main(["tag", ckpt, p, "--taggram-dir", str(out), "--hop", "0.5", "--workers", "0",
                 "-o", str(tmp_path / "o.json")]) == 0
    rec = json.loads((tmp_path / "o.json").read_text())[0]
    with open(out / "song.wav.taggram.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["start_s", "end_s"] + TAGS
    assert len(rows) - 1 == rec["segments"] == 7  # starts 0, 0.5, ..., 3.0 (last padded)
    starts = [float(r[0]) for r in rows[1:]]
    assert starts == pytest.approx([0.5 * i for i in range(7)])
    assert float(rows[-1][1]) == pytest.approx(4.0)
    scores = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert scores.mean(axis=0) == pytest.approx([rec["tags"][t] for t in TAGS], abs=1e-5)
    png = out / "song.wav.taggram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_path_through_the_cli(ckpt, folder, tmp_path):
    root, good, bad = folder
    out = tmp_path / "w.jsonl"
    assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--workers", "2",
                 "--batch-size", "3", "-q"]) == 1
    recs = {r["path"]: r for r in _records(out.read_text(), "jsonl")}
    assert set(recs) == set(good) | set(bad)
    assert all(recs[g]["error"] is None for g in good) and all(recs[b]["error"] for b in bad)


def test_embed_cli_writes_npz(ckpt, folder, tmp_path):
    root, good, bad = folder
    out = tmp_path / "emb.npz"
    assert main(["embed", ckpt, *good, bad[0], "--layer", "block2", "--out", str(out),
                 "--workers", "0", "-q"]) == 1
    z = np.load(out)
    tagger = Tagger.from_checkpoint(ckpt)
    dim = 0
    for i, p in enumerate(good):
        e = tagger.embed(p, layer="block2")
        dim = e.windows.shape[1]
        rows = z["window_embeddings"][z["window_file"] == i]
        np.testing.assert_allclose(rows, e.windows, atol=1e-5)
        np.testing.assert_allclose(z["file_embeddings"][i], e.clip, atol=1e-5)
        np.testing.assert_allclose(z["window_start_s"][z["window_file"] == i], e.start_s)
    assert list(z["paths"]) == good + [bad[0]]
    assert list(z["ok"]) == [True] * len(good) + [False]
    assert z["errors"][-1] and np.isnan(z["file_embeddings"][-1]).all()
    assert z["file_embeddings"].shape == (len(good) + 1, dim) and str(z["layer"]) == "block2"


def test_unknown_layer_and_bad_checkpoint_are_one_line_errors(ckpt, folder, tmp_path, capsys):
    _, good, _ = folder
    assert main(["embed", ckpt, good[0], "--layer", "nope", "--out", str(tmp_path / "e.npz")]) == 2
    assert "unknown layer 'nope'" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"nope")
    assert main(["tag", str(junk), good[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert str(junk) in err and len(err.splitlines()) == 1
