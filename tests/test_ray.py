"""The Ray engine on a local Ray instance (2 CPUs, no dashboard, loopback only): same
scores as the local engine, manifests, resume after an interrupted run, and a scoring
actor killed mid-run."""
from __future__ import annotations

import faulthandler
import json
import logging
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from samplecnn.cli import main  # noqa: E402
from samplecnn.testing.datasets import write_noise, write_tiny_checkpoint  # noqa: E402
from samplecnn.paths import path_key, unescape_path  # noqa: E402
from samplecnn.tagging.catalog import tag_catalog  # noqa: E402
from samplecnn.tagging.parquet import read_output  # noqa: E402
from samplecnn.tagging.ray_engine import FAULT_ENV  # noqa: E402

TAGS = ["rock", "piano", "quiet", "male vocal"]
SR = 16000
# Ray on a loaded 2-core machine can take a while to start, but never forever: past this,
# the test process prints every thread's stack and exits instead of hanging CI.
WATCHDOG_S = 600


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray instance for the module; the fault hook's file lives in its folder."""
    fault_dir = tmp_path_factory.mktemp("fault")
    os.environ[FAULT_ENV] = str(fault_dir / "crash-after")  # inherited by Ray's workers
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield fault_dir / "crash-after"
    finally:
        ray.shutdown()
        faulthandler.cancel_dump_traceback_later()
        os.environ.pop(FAULT_ENV, None)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=1)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Good files (one at another rate, one in a subfolder, one not UTF-8) and broken ones."""
    root = tmp_path_factory.mktemp("music")
    good = [write_noise(root / f"t{i}.wav", 3.0 - 0.4 * i, i) for i in range(5)]
    good.append(write_noise(root / "sub" / "u.flac", 2.0, 9, rate=22050))
    # A name that is not UTF-8 travels through Ray (as its escaped text) and back.
    odd = os.fsdecode(os.path.join(os.fsencode(str(root)), b"caf\xe9 \\.wav"))
    os.rename(write_noise(root / "plain.wav", 1.5, 11), odd)
    good.append(odd)
    (root / "empty.mp3").write_bytes(b"")
    (root / "sub" / "junk.mp3").write_bytes(b"\x00\x01garbage" * 200)
    (root / "trunc.wav").write_bytes((root / "t0.wav").read_bytes()[:30])
    bad = [str(root / "empty.mp3"), str(root / "sub" / "junk.mp3"), str(root / "trunc.wav")]
    return root, good, bad


@pytest.fixture(scope="module")
def local_rows(ckpt, catalog, tmp_path_factory):
    root, _, _ = catalog
    out = tmp_path_factory.mktemp("local") / "tags"
    assert main(["tag", ckpt, str(root), "--format", "parquet", "-o", str(out), "--workers", "0",
                 "-q"]) == 1
    return _rows(out)


def _key(text):
    """The file a record's (escaped) `path` names."""
    return path_key(unescape_path(text))


def _rows(out):
    return {_key(r["path"]): r for r in read_output(out).to_pylist()}


def _raw_count(out):
    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet"))


def _assert_same(rows, reference, keys):
    assert set(rows) == set(keys)
    for k in keys:
        r, ref = rows[k], reference[k]
        assert (r["error"] is None) == (ref["error"] is None), k
        assert r["segments"] == ref["segments"] and r["duration_s"] == ref["duration_s"]
        if ref["error"] is None:
            np.testing.assert_allclose([r[t] for t in TAGS], [ref[t] for t in TAGS], atol=1e-5)
            assert [t["tag"] for t in r["top"]] == [t["tag"] for t in ref["top"]]
        assert r["labels"] == ref["labels"], k


def test_ray_gives_the_local_engines_scores_on_good_and_broken_files(ray_local, ckpt, catalog,
                                                                     local_rows, tmp_path, capsys):
    root, good, bad = catalog
    out = tmp_path / "tags"
    assert main(["tag", ckpt, str(root), "--engine", "ray", "--num-workers", "2",
                 "--batch-size", "3", "-o", str(out)]) == 1  # some files failed
    err = capsys.readouterr().err
    for b in bad:
        assert b in err
    assert f"{len(bad)} of {len(good) + len(bad)} file(s) failed" in err
    rows = _rows(out)
    _assert_same(rows, local_rows, {path_key(p) for p in good + bad})
    assert _raw_count(out) == len(good) + len(bad)
    assert {r["model"] for r in rows.values()} == {"m.ckpt"}
    for b in bad:
        assert rows[path_key(b)]["error"] and rows[path_key(b)]["rock"] is None


def test_ray_writes_the_local_engines_labels(ray_local, ckpt, catalog, local_rows, tmp_path, capsys):
    """A checkpoint with thresholds: the actors (ONNX graph from the driver, thresholds in
    its metadata) decide like the local engine; --threshold and --at-least-one too."""
    from samplecnn.checkpoint import set_thresholds
    from samplecnn.thresholds import Thresholds

    root, good, bad = catalog
    scores = np.array([[local_rows[path_key(p)][t] for t in TAGS] for p in good])
    th = Thresholds(np.median(scores, axis=0), TAGS, split="valid")  # about half decided
    fitted = str(set_thresholds(ckpt, th, tmp_path / "fitted.ckpt"))
    ref, out = tmp_path / "local", tmp_path / "ray"
    for extra in ([], ["--threshold", "0.999", "--at-least-one"]):
        assert main(["tag", fitted, str(root), "--format", "parquet", "-o", str(ref), "--workers", "0",
                     "-q", *extra]) == 1
        assert main(["tag", fitted, str(root), "--engine", "ray", "-o", str(out), "-q", *extra]) == 1
        rows, want = _rows(out), _rows(ref)
        _assert_same(rows, want, {path_key(p) for p in good + bad})
        decided = [rows[path_key(p)]["labels"] for p in good]
        assert all(isinstance(x, list) for x in decided) and any(decided)
        if extra:
            assert all(len(x) == 1 for x in decided)
    assert "no decision thresholds" not in capsys.readouterr().err
    assert main(["tag", ckpt, good[0], "--engine", "ray", "-o", str(tmp_path / "plain")]) == 0
    assert "no decision thresholds" in capsys.readouterr().err


def test_a_manifest_csv_or_parquet_is_read_by_the_cluster(ray_local, ckpt, catalog, local_rows,
                                                          tmp_path):
    root, good, bad = catalog
    csv_manifest = root / "catalog.csv"
    rel = [os.path.relpath(p, root) for p in good[:3]] + ["not-there.wav"]
    csv_manifest.write_text("path,genre\n" + "".join(f"{p},x\n" for p in rel))
    pq_manifest = tmp_path / "catalog.parquet"
    listed = good[3:-1] + bad[:1]  # a manifest holds UTF-8 text: not the odd name
    pq.write_table(pa.table({"path": listed}), pq_manifest)

    run = tag_catalog(ckpt, manifest=csv_manifest, output=tmp_path / "a", engine="ray")
    assert (run.total, run.tagged, run.failed) == (4, 4, 1)
    rows = _rows(tmp_path / "a")
    missing = path_key(root / "not-there.wav")
    assert set(rows) == {path_key(p) for p in good[:3]} | {missing}
    assert rows[missing]["error"]
    _assert_same({k: v for k, v in rows.items() if k != missing}, local_rows,
                 {path_key(p) for p in good[:3]})

    # JSONL stays available on Ray: the same records as the local engine's rows.
    jl = tmp_path / "b.jsonl"
    run = tag_catalog(ckpt, manifest=pq_manifest, output=jl, fmt="jsonl", engine="ray",
                      num_workers=2)
    assert (run.total, run.tagged, run.failed) == (4, 4, 1)
    recs = {_key(r["path"]): r for r in map(json.loads, jl.read_text().splitlines())}
    assert set(recs) == {path_key(p) for p in listed}
    assert recs[path_key(bad[0])]["error"] and recs[path_key(bad[0])]["tags"] is None
    for p in good[3:-1]:
        ref = local_rows[path_key(p)]
        np.testing.assert_allclose([recs[path_key(p)]["tags"][t] for t in TAGS],
                                   [ref[t] for t in TAGS], atol=1e-5)


def test_resume_after_an_interrupted_run_tags_only_what_is_missing(ray_local, ckpt, catalog,
                                                                   local_rows, tmp_path):
    root, good, _ = catalog
    out = tmp_path / "tags"
    seen = []

    def interrupt(rec):
        seen.append(_key(rec["path"]))
        if len(seen) == 2:
            raise KeyboardInterrupt  # the driver is stopped after two part files

    with pytest.raises(KeyboardInterrupt):
        tag_catalog(ckpt, good, output=out, engine="ray", rows_per_part=1, files_per_batch=1,
                    on_record=interrupt)
    assert len(_rows(out)) == 2
    resumed = []
    run = tag_catalog(ckpt, good, output=out, engine="ray", resume=True,
                      on_record=lambda r: resumed.append(_key(r["path"])))
    assert (run.total, run.skipped, run.tagged, run.failed) == (len(good), 2, len(good) - 2, 0)
    assert sorted(resumed) == sorted(set(map(path_key, good)) - set(seen))
    assert _raw_count(out) == len(good)  # nothing written twice
    _assert_same(_rows(out), local_rows, {path_key(p) for p in good})


def test_a_scoring_actor_killed_mid_run_loses_and_duplicates_nothing(ray_local, ckpt, catalog,
                                                                     local_rows, tmp_path):
    root, good, bad = catalog
    ray_local.write_text("3")  # the actor exits hard when it starts its 3rd batch
    out = tmp_path / "tags"
    run = tag_catalog(ckpt, [str(root)], output=out, engine="ray", num_workers=1,
                      files_per_batch=1)
    assert ray_local.with_name(ray_local.name + ".fired").exists()  # it did die
    assert not ray_local.exists()
    assert (run.tagged, run.failed) == (len(good) + len(bad), len(bad))
    assert _raw_count(out) == len(good) + len(bad)
    _assert_same(_rows(out), local_rows, {path_key(p) for p in good + bad})


def test_cpu_actors_score_the_drivers_export_without_importing_torch(ckpt, catalog, local_rows,
                                                                      tmp_path):
    """On CPUs the driver ships its ONNX export to the actors: an actor starts without
    torch (seconds per actor) and scores exactly what the local engine scores."""
    import subprocess
    import sys
    from pathlib import Path

    from samplecnn.checkpoint import load_model
    from samplecnn.inference.onnx import cached_graph

    graph = tmp_path / "scores.onnx"
    graph.write_bytes(Path(cached_graph(load_model(ckpt), "scores")).read_bytes())
    _, good, _ = catalog
    code = """
import json, sys
from pathlib import Path
from samplecnn.paths import escape_path
from samplecnn.options import ScoringOptions
from samplecnn.tagging.ray_engine import _Scorer, _decode_row
s = _Scorer("m.ckpt", ScoringOptions(top_k=3), "cpu", 1, 4, graph=Path(sys.argv[1]).read_bytes())
rows = [_decode_row({"path": escape_path(p)}, sample_rate=s.tagger.sample_rate, grid=s.tagger.grid(s.options))
        for p in sys.argv[2:]]
out = s({k: [r[k] for r in rows] for k in rows[0]})
print(json.dumps({"torch": "torch" in sys.modules,
                  "records": [json.loads(r) for r in out["record"]]}))
"""
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code, str(graph), *good[:3]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert len(result["records"]) == 3
    for path, record in zip(good[:3], result["records"]):
        assert record["error"] is None
        ref = local_rows[path_key(path)]
        np.testing.assert_allclose([record["tags"][t] for t in TAGS], [ref[t] for t in TAGS],
                                   atol=1e-6)


def test_an_int8_onnx_file_goes_to_the_actors_as_it_is(ray_local, ckpt, catalog, tmp_path):
    """The cluster runs an int8 export (issue 23) as its bytes: the local engine's scores."""
    root, good, _ = catalog
    int8 = tmp_path / "m.int8.onnx"
    assert main(["export", ckpt, "--onnx", str(int8), "--int8", "--calibration", str(root),
                 "--calibration-windows", "8"]) == 0
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    assert main(["tag", str(int8), *good[:3], "--format", "parquet", "-o", str(local),
                 "--workers", "0", "-q"]) == 0
    assert main(["tag", str(int8), *good[:3], "--engine", "ray", "--num-workers", "1",
                 "-o", str(cluster), "-q"]) == 0
    ref = _rows(local)
    _assert_same(_rows(cluster), ref, set(ref))
    assert {r["model"] for r in ref.values()} == {"m.int8.onnx"}
