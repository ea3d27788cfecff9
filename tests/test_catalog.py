"""Catalog outputs and inputs without a cluster: the Parquet output (local engine),
manifests, and the Ray engine's install hint when Ray is missing."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from samplecnn.cli import main  # noqa: E402
from samplecnn.testing.datasets import write_noise, write_tiny_checkpoint  # noqa: E402
from samplecnn.paths import path_key  # noqa: E402
from samplecnn.tagging import Tagger  # noqa: E402
from samplecnn.tagging.catalog import read_manifest, tag_catalog  # noqa: E402
from samplecnn.tagging.parquet import FIXED_COLUMNS, ParquetOutput, read_output  # noqa: E402

# "error" collides with a fixed column: its column is "tag:error".
TAGS = ["rock", "piano", "error", "male vocal"]
SR = 16000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", TAGS, seed=3)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "music"
    good = [write_noise(root / "a.wav", 2.0, 1), write_noise(root / "sub" / "b.flac", 0.7, 2, rate=22050),
            write_noise(root / "c.wav", 3.0, 3)]
    (root / "junk.mp3").write_bytes(b"\x00\x01garbage" * 100)
    return root, good, [str(root / "junk.mp3")]


def _by_key(table):
    return {path_key(r["path"]): r for r in table.to_pylist()}


def test_parquet_output_has_a_row_per_file_and_a_column_per_tag(ckpt, folder, tmp_path, capsys):
    root, good, bad = folder
    out = tmp_path / "tags"
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--workers", "0",
                 "--top-k", "2"]) == 1
    assert bad[0] in capsys.readouterr().err
    table = read_output(out)
    tag_cols = ["rock", "piano", "tag:error", "male vocal"]
    assert table.column_names == FIXED_COLUMNS[:4] + tag_cols + FIXED_COLUMNS[4:]
    assert json.loads(table.schema.metadata[b"samplecnn.tags"]) == TAGS
    rows = _by_key(table)
    assert set(rows) == {path_key(p) for p in good + bad}
    tagger = Tagger.from_checkpoint(ckpt)
    for g in good:
        r, ref = rows[path_key(g)], tagger.tag(g, top_k=2)
        assert r["error"] is None and r["model"] == "tiny.ckpt" and r["sample_rate"] == SR
        assert r["segments"] == ref["segments"] and r["duration_s"] == pytest.approx(ref["duration_s"])
        assert [r[c] for c in tag_cols] == pytest.approx([ref["tags"][t] for t in TAGS], abs=1e-6)
        assert [[t["tag"], t["score"]] for t in r["top"]] == [[t, pytest.approx(s, abs=1e-6)]
                                                              for t, s in ref["top"]]
    r = rows[path_key(bad[0])]
    assert r["error"] and r["top"] == [] and all(r[c] is None for c in tag_cols)


def test_parquet_resume_retries_failed_files_and_reads_back_one_row_per_file(ckpt, folder, tmp_path,
                                                                             capsys):
    root, good, bad = folder
    out = tmp_path / "tags"
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--workers", "0",
                 "-q"]) == 1
    write_noise(root / "junk.mp3", 1.0, 9)  # the broken file gets repaired
    write_noise(root / "d.wav", 1.2, 4)  # and a new file appears
    capsys.readouterr()
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--resume",
                 "--workers", "0"]) == 0
    assert "3 file(s) already done" in capsys.readouterr().err
    parts = sorted(out.glob("part-*.parquet"))
    raw = pa.concat_tables([pq.read_table(p) for p in parts])
    assert raw.num_rows == 6  # 4 first, then the retried file and the new one
    rows = _by_key(read_output(out))
    assert len(rows) == 5 and all(r["error"] is None for r in rows.values())
    # A run without --resume replaces the output instead of adding to it.
    assert main(["tag", ckpt, good[0], "--format", "parquet", "-o", str(out), "--workers", "0"]) == 0
    assert read_output(out).num_rows == 1


def test_read_output_keeps_a_success_over_a_later_failure_and_the_last_row_otherwise(tmp_path):
    def rec(path, score, error=None):
        return {"path": path, "tags": None if error else {"x": score}, "top": [], "error": error,
                "duration_s": 1.0, "segments": 1, "sample_rate": SR}

    with ParquetOutput(tmp_path / "o", ["x"], "m", rows_per_part=1) as w:
        w.write(rec("/a.wav", 0.1))
        w.write(rec("/b.wav", 0.2, error="broken"))
        w.write(rec("/a.wav", 0.0, error="decoder died"))  # a later failure of a done file
        w.write(rec("/b.wav", 0.3))
        w.write(rec("/b.wav", 0.4))
    assert len(list((tmp_path / "o").glob("part-*.parquet"))) == 5
    rows = {r["path"]: r for r in read_output(tmp_path / "o").to_pylist()}
    assert rows["/a.wav"]["x"] == 0.1 and rows["/a.wav"]["error"] is None
    assert rows["/b.wav"]["x"] == 0.4


def test_parquet_output_is_held_by_one_writer(tmp_path):
    first = ParquetOutput(tmp_path / "o", ["x"], "m")
    try:
        with pytest.raises(ValueError, match="in use by another"):
            ParquetOutput(tmp_path / "o", ["x"], "m")
    finally:
        first.close()
    ParquetOutput(tmp_path / "o", ["x"], "m", append=True).close()  # free again
    with pytest.raises(ValueError, match="other tags"):
        w = ParquetOutput(tmp_path / "o2", ["x"], "m")
        w.write({"path": "/a.wav", "tags": {"x": 0.5}, "top": [], "error": None})
        w.close()
        ParquetOutput(tmp_path / "o2", ["y"], "m", append=True)


def test_manifests_csv_and_parquet_resolve_relative_paths(ckpt, folder, tmp_path):
    root, good, bad = folder
    csv_manifest = root / "list.csv"
    csv_manifest.write_text("id,path\n1,a.wav\n2,sub/b.flac\n3,missing.wav\n")
    assert read_manifest(csv_manifest) == [str(root / "a.wav"), str(root / "sub" / "b.flac"),
                                           str(root / "missing.wav")]
    pq_manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [good[2], bad[0]], "genre": ["x", "y"]}), pq_manifest)
    run = tag_catalog(ckpt, [good[0]], manifest=pq_manifest, output=tmp_path / "o", workers=0)
    assert (run.total, run.tagged, run.failed) == (3, 3, 1)
    out = tmp_path / "o.jsonl"
    assert main(["tag", ckpt, "--manifest", str(csv_manifest), "--format", "jsonl", "-o", str(out),
                 "--workers", "0", "-q"]) == 1
    recs = {path_key(json.loads(x)["path"]): json.loads(x) for x in out.read_text().splitlines()}
    assert set(recs) == {path_key(p) for p in read_manifest(csv_manifest)}
    assert recs[path_key(root / "missing.wav")]["error"]


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_manifest_without_a_path_column_is_a_one_line_error(ckpt, tmp_path, capsys, engine):
    bad = tmp_path / "list.csv"
    bad.write_text("file,genre\na.wav,rock\n")
    assert main(["tag", ckpt, "--manifest", str(bad), "--engine", engine, "-o",
                 str(tmp_path / "o"), "--format", "parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "no 'path' column" in err
    assert main(["tag", ckpt, "--format", "parquet", "-o", str(tmp_path / "o")]) == 2
    assert "--manifest" in capsys.readouterr().err


def test_the_ray_engine_without_ray_says_how_to_install_it(ckpt, folder, tmp_path, capsys,
                                                           monkeypatch):
    _, good, _ = folder
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["tag", ckpt, good[0], "--engine", "ray", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'samplecnn[ray]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_file_name_that_is_not_utf8_is_escaped_in_parquet_and_resumed(ckpt, tmp_path, capsys):
    import os

    from samplecnn.paths import unescape_path

    root = tmp_path / "odd"
    root.mkdir()
    name = os.fsdecode(os.path.join(os.fsencode(str(root)), b"caf\xe9 \\ 1.wav"))
    sf.write(root / "plain.wav", np.zeros(SR, np.float32) + 0.1, SR)
    os.rename(os.fsencode(str(root / "plain.wav")), os.fsencode(name))
    out = tmp_path / "tags"
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--workers", "0"]) == 0
    (row,) = read_output(out).to_pylist()
    assert row["path"].endswith("caf\\xe9 \\\\ 1.wav") and unescape_path(row["path"]) == name
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--workers", "0",
                 "--resume"]) == 0
    assert "1 file(s) already done" in capsys.readouterr().err
    assert read_output(out).num_rows == 1
