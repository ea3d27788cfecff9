"""Issue 11 for `tag` / `embed` / the Tagger: odd file names, integer arrays, one writer per
output, outputs checked before any work, resume from another directory, nothing in a
folder skipped in silence, devices, warnings."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from samplecnn.cli import main
from samplecnn.paths import escape_path, path_key, unescape_path
from samplecnn.tagging import Tagger, expand_paths
from samplecnn.testing.datasets import write_tiny_checkpoint

TAGS = ["rock", "piano", "quiet"]
SR = 16000
ODD = b"odd \xff name.wav"  # not valid UTF-8: a name every POSIX file system allows


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=3)


@pytest.fixture(scope="module")
def tagger(ckpt):
    return Tagger.from_checkpoint(ckpt, batch_size=4)


def _noise(n, seed):
    return (0.3 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _write(path, seconds, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, _noise(int(seconds * SR), seed), SR, format="WAV")
    return path


@pytest.fixture
def odd_folder(tmp_path):
    """Two good files and one whose name is not UTF-8, all decodable."""
    root = tmp_path / "music"
    good = [_write(str(root / "a.wav"), 0.5, 1), _write(str(root / "c.wav"), 0.7, 2)]
    odd = os.fsdecode(_write(os.path.join(os.fsencode(root), ODD), 0.6, 3))
    return root, sorted(good + [odd]), odd


def _records(text, fmt):
    if fmt == "json":
        return json.loads(text)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines()]


# -- 11.1: names that are not UTF-8 ----------------------------------------------------

def test_escaped_paths_round_trip():
    for raw in [b"/m/plain.wav", b"/m/\xff\xfe.wav", b"/m/back\\slash.wav", b"/m/new\nline.wav",
                b"/m/caf\xc3\xa9.wav", b"/m/lit\\xff.wav"]:
        text = escape_path(os.fsdecode(raw))
        text.encode("utf-8")  # always writable as UTF-8, on one line
        assert "\n" not in text
        assert os.fsencode(unescape_path(text)) == raw
    assert escape_path("/m/café.wav") == "/m/café.wav"  # ordinary names are unchanged
    assert escape_path(os.fsdecode(b"/m/\xff.wav")) == "/m/\\xff.wav"


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "stdout"])
def test_non_utf8_name_is_tagged_and_written(ckpt, tagger, odd_folder, tmp_path, capsys, fmt):
    root, paths, odd = odd_folder
    args = ["tag", ckpt, str(root), "--workers", "0"]
    if fmt == "stdout":
        assert main(args) == 0
        text, fmt = capsys.readouterr().out, "json"
    else:
        out = tmp_path / f"o.{fmt}"
        assert main(args + ["--format", fmt, "-o", str(out)]) == 0
        text = out.read_bytes().decode("utf-8")  # strictly valid UTF-8
    recs = _records(text, fmt)
    assert [unescape_path(r["path"]) for r in recs] == paths
    assert escape_path(odd) in [r["path"] for r in recs]
    for r in recs:
        assert r["error"] in (None, "")
        want = tagger.tag(unescape_path(r["path"]))["tags"]  # the record's path opens the file
        got = r["tags"] if fmt != "csv" else {t: float(r[t]) for t in TAGS}
        assert got == pytest.approx(want, abs=1e-6)


def test_non_utf8_name_resumes(ckpt, odd_folder, tmp_path, capsys):
    root, paths, odd = odd_folder
    out = tmp_path / "o.jsonl"
    assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--workers", "1"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    odd_line = [x for x in lines if json.loads(x)["path"] == escape_path(odd)]
    keep = [x for x in lines if x not in odd_line][:1] + odd_line  # "killed" after 2 files
    out.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    capsys.readouterr()
    assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--resume",
                 "--workers", "0"]) == 0
    assert "2 file(s) already done" in capsys.readouterr().err
    recs = _records(out.read_text(encoding="utf-8"), "jsonl")
    assert sorted(unescape_path(r["path"]) for r in recs) == paths  # no duplicate, none missing


def test_non_utf8_name_gets_its_taggram(ckpt, tagger, odd_folder, tmp_path):
    root, paths, odd = odd_folder
    out = tmp_path / "tg"
    assert main(["tag", ckpt, odd, "--taggram-dir", str(out), "--workers", "0", "-o",
                 str(tmp_path / "o.json")]) == 0
    csv_name = os.fsencode(out) + b"/" + ODD + b".taggram.csv"  # the name's own bytes
    with open(csv_name, newline="") as f:
        rows = list(csv.reader(f))
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in rows[1:]]),
                               tagger.taggram(odd).scores, atol=1e-5)
    assert os.path.exists(os.fsencode(out) + b"/" + ODD + b".taggram.png")


def test_an_output_is_a_manifest_whatever_the_names(ckpt, odd_folder, tmp_path):
    root, paths, odd = odd_folder
    first = tmp_path / "first.csv"
    assert main(["tag", ckpt, str(root), "--format", "csv", "-o", str(first), "--workers", "0"]) == 0
    again = tmp_path / "again.jsonl"
    assert main(["tag", ckpt, "--manifest", str(first), "--format", "jsonl", "-o", str(again),
                 "--workers", "0"]) == 0
    recs = _records(again.read_text(encoding="utf-8"), "jsonl")
    assert [unescape_path(r["path"]) for r in recs] == paths and all(r["error"] is None for r in recs)


def test_non_utf8_name_is_embedded(ckpt, tagger, odd_folder, tmp_path):
    root, paths, odd = odd_folder
    out = tmp_path / "e.npz"
    assert main(["embed", ckpt, str(root), "--out", str(out), "--workers", "0"]) == 0
    z = np.load(out)
    assert [unescape_path(p) for p in z["paths"]] == paths and z["ok"].all()
    i = paths.index(odd)
    np.testing.assert_allclose(z["file_embeddings"][i], tagger.embed(odd).clip, atol=1e-5)


def test_bytes_file_names_are_paths(tagger, tmp_path):
    song = _write(str(tmp_path / "s.wav"), 0.4, 9)
    rec = tagger.tag(os.fsencode(song))  # a name as the OS spells it, not an array of bytes
    assert rec["path"] == song and rec["tags"] == pytest.approx(tagger.tag(song)["tags"], abs=1e-6)
    np.testing.assert_allclose(tagger.embed(os.fsencode(song)).clip, tagger.embed(song).clip, atol=1e-6)


# -- 11.2: integer arrays --------------------------------------------------------------

@pytest.mark.parametrize("subtype,dtype", [("PCM_16", "int16"), ("PCM_32", "int32")])
def test_integer_arrays_are_scaled_like_soundfile(tagger, tmp_path, subtype, dtype):
    path = str(tmp_path / "x.wav")
    sf.write(path, _noise(SR, 5), SR, subtype=subtype)
    x_int, sr = sf.read(path, dtype=dtype)  # what scipy.io.wavfile.read gives too
    assert x_int.dtype == np.dtype(dtype)
    want = tagger.tag(path)["tags"]
    assert tagger.tag(x_int, sample_rate=sr)["tags"] == pytest.approx(want, abs=1e-5)
    np.testing.assert_allclose(tagger.taggram(x_int, sample_rate=sr).scores,
                               tagger.taggram(path).scores, atol=1e-5)
    np.testing.assert_allclose(tagger.embed(x_int, sample_rate=sr).clip, tagger.embed(path).clip,
                               atol=1e-5)


def test_uint8_is_offset_by_128(tagger, tmp_path):
    u = np.random.default_rng(6).integers(0, 256, SR, dtype=np.uint8)
    path = str(tmp_path / "u8.wav")
    # 8-bit WAV is unsigned; libsndfile reads it back as (u - 128) / 128 exactly.
    sf.write(path, (u.astype(np.float64) - 128) / 128, SR, subtype="PCM_U8")
    assert tagger.tag(u, sample_rate=SR)["tags"] == pytest.approx(tagger.tag(path)["tags"], abs=1e-5)


def test_float64_is_accepted_and_other_dtypes_refused(tagger):
    x = _noise(SR, 7)
    assert tagger.tag(x.astype(np.float64), sample_rate=SR)["tags"] == pytest.approx(
        tagger.tag(x, sample_rate=SR)["tags"], abs=1e-6)
    for bad in [x > 0, x.astype(np.complex64), (x * 1000).astype(np.int64),
                (x * 100).astype(np.int8), np.abs(x * 1000).astype(np.uint16)]:
        for fn in (tagger.tag, tagger.taggram, tagger.embed):
            with pytest.raises(ValueError, match="dtype"):
                fn(bad, sample_rate=SR)


def test_arrays_without_samples_are_refused(tagger):
    for empty in [np.zeros((2, 0), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.int16)]:
        for fn in (tagger.tag, tagger.taggram, tagger.embed):
            with pytest.raises(ValueError, match="no samples"):
                fn(empty, sample_rate=SR)


# -- 11.5: one writer per output -------------------------------------------------------

def _hold(path):
    """Another process holding `path` as samplecnn's writers do."""
    code = ("import sys, time\nfrom samplecnn.locks import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["tag", "embed"])
def test_second_writer_is_refused(ckpt, tmp_path, capsys, command):
    root = _write(str(tmp_path / "music" / "a.wav"), 0.3, 4)
    out = tmp_path / ("o.jsonl" if command == "tag" else "e.npz")
    out.write_text("the first writer's\n")
    proc = _hold(out)
    try:
        args = (["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out)] if command == "tag"
                else ["embed", ckpt, str(root), "--out", str(out)])
        assert main(args + ["--workers", "0"]) == 2
        assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--resume"]) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("in use by another samplecnn process" in e for e in err)
    assert out.read_text() == "the first writer's\n"  # untouched: nothing scored, nothing written
    if command == "tag":  # once the holder is gone, the output is ours
        assert main(["tag", ckpt, str(root), "--format", "jsonl", "-o", str(out), "--workers", "0"]) == 0


def test_onnx_cache_entry_is_made_once_under_a_lock(tmp_path):
    from samplecnn.cache import cached_file
    from samplecnn.locks import lock_path

    target = tmp_path / "cache" / "entry.bin"
    calls = []

    def produce(tmp):
        calls.append(tmp)
        tmp.write_bytes(b"x")

    proc = _hold(target)
    try:
        from samplecnn.locks import OutputBusy

        with pytest.raises(OutputBusy):
            cached_file(target, produce, wait_s=0.2)  # held elsewhere: wait, never write beside it
    finally:
        proc.kill()
        proc.wait()
    assert not target.exists() and not calls
    assert cached_file(target, produce) == target and target.read_bytes() == b"x"
    assert cached_file(target, produce) == target and len(calls) == 1
    assert lock_path(target).exists()


# -- 11.6: outputs checked before any work ---------------------------------------------

def _bad_outputs(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"is a folder": str(folder), "is a file": str(a_file / "sub" / "out.json")}


def test_bad_outputs_fail_before_any_file_is_read(ckpt, tmp_path, capsys, monkeypatch):
    import samplecnn.tagging.sources as sources

    song = _write(str(tmp_path / "in" / "s.wav"), 0.3, 8)

    def no_work(*a, **k):
        raise AssertionError("a file was read before the outputs were checked")

    monkeypatch.setattr(sources, "file_blocks", no_work)
    for why, bad in _bad_outputs(tmp_path).items():
        for args in (["tag", ckpt, song, "-o", bad], ["tag", ckpt, song, "--format", "csv", "-o", bad],
                     ["tag", ckpt, song, "--format", "jsonl", "-o", bad, "--resume"],
                     ["embed", ckpt, song, "--out", bad],
                     ["export", ckpt, "--onnx", bad, "--no-check"]):
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and why in err and escape_path(bad) in err
    a_file = str(tmp_path / "a_file")
    assert main(["tag", ckpt, song, "--taggram-dir", a_file]) == 2
    assert "--taggram-dir" in capsys.readouterr().err


def test_outputs_are_checked_before_weights_are_fetched(tmp_path, capsys, monkeypatch):
    import samplecnn.pretrained as pretrained

    def no_download(*a, **k):
        raise AssertionError("weights fetched before the outputs were checked")

    monkeypatch.setattr(pretrained, "resolve", no_download)
    song = _write(str(tmp_path / "s.wav"), 0.3, 8)
    bad = _bad_outputs(tmp_path)["is a file"]
    for args in (["tag", "--pretrained", "sota-mtat-sample", song, "-o", bad],
                 ["embed", "--pretrained", "sota-mtat-sample", song, "--out", bad],
                 ["export", "--pretrained", "sota-mtat-sample", "--onnx", bad],
                 ["evaluate", "--pretrained", "sota-mtat-sample", "--data", str(tmp_path), "--out", bad]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a file" in err, err


def test_evaluate_out_is_checked_before_scoring(ckpt, tmp_path, capsys, monkeypatch):
    import samplecnn.evaluation as evaluation

    def no_work(*a, **k):
        raise AssertionError("scored before --out was checked")

    monkeypatch.setattr(evaluation, "evaluate", no_work)
    a_file = tmp_path / "metrics"
    a_file.write_text("x")
    assert main(["evaluate", ckpt, "--data", str(tmp_path), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder_is_refused(ckpt, tmp_path, capsys):
    song = _write(str(tmp_path / "in" / "s.wav"), 0.3, 8)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["tag", ckpt, song, "-o", str(locked / "o.json")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


# -- 11.7: resume from another working directory ---------------------------------------

def test_resume_from_another_working_directory(ckpt, tmp_path, monkeypatch, capsys):
    root = tmp_path / "work" / "music"
    paths = [_write(str(root / f"{i}.wav"), 0.3, 10 + i) for i in range(4)]
    out = tmp_path / "work" / "tags.jsonl"
    monkeypatch.chdir(tmp_path / "work")
    assert main(["tag", ckpt, "music", "--format", "jsonl", "-o", "tags.jsonl", "--workers", "0"]) == 0
    lines = out.read_text().splitlines()
    out.write_text("".join(x + "\n" for x in lines[:2]))  # killed after two files
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert main(["tag", ckpt, ".", "--format", "jsonl", "-o", "../tags.jsonl", "--resume",
                 "--workers", "0"]) == 0
    assert "2 file(s) already done" in capsys.readouterr().err
    recs = _records(out.read_text(), "jsonl")
    assert sorted(r["path"] for r in recs) == sorted(path_key(p) for p in paths)
    assert all(os.path.isabs(r["path"]) for r in recs)


# -- 11.8: nothing in a walked folder is skipped in silence ----------------------------

def test_unreadable_entries_are_reported_as_failed_files(ckpt, tmp_path, capsys):
    root = tmp_path / "music"
    good = _write(str(root / "a.wav"), 0.3, 20)
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    (root / "loop.mp3").symlink_to(root / "loop.mp3")
    (root / "notes.txt").write_text("not audio by its name: not listed")
    listed = expand_paths([str(root)])
    assert listed == sorted([good, str(root / "dangling.wav"), str(root / "loop.mp3")])
    out = tmp_path / "o.json"
    assert main(["tag", ckpt, str(root), "-o", str(out), "--workers", "0"]) == 1
    recs = {r["path"]: r for r in json.loads(out.read_text())}
    assert recs[good]["error"] is None
    assert "broken symbolic link" in recs[str(root / "dangling.wav")]["error"]
    assert "symbolic link loop" in recs[str(root / "loop.mp3")]["error"]
    err = capsys.readouterr().err
    assert "2 of 3 file(s) failed" in err and "dangling.wav: broken symbolic link" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists unreadable folders")
def test_unlistable_sub_folder_is_reported(tmp_path):
    root = tmp_path / "music"
    _write(str(root / "a.wav"), 0.3, 21)
    _write(str(root / "closed" / "b.wav"), 0.3, 22)
    (root / "closed").chmod(0)
    try:
        assert str(root / "closed") in expand_paths([str(root)])
    finally:
        (root / "closed").chmod(0o700)


def test_symlinked_folder_is_not_followed_but_said(tmp_path):
    root = tmp_path / "music"
    _write(str(root / "a.wav"), 0.3, 23)
    (root / "again").symlink_to(root)
    said = []
    assert expand_paths([str(root)], warn=said.append) == [str(root / "a.wav")]
    assert len(said) == 1 and "not followed" in said[0]


# -- devices and warnings --------------------------------------------------------------

@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(ckpt, tmp_path, capsys):
    song = _write(str(tmp_path / "s.wav"), 0.3, 24)
    for args in (["tag", ckpt, song, "--device", "cuda"], ["embed", ckpt, song, "--out",
                 str(tmp_path / "e.npz"), "--device", "cuda:1"],
                 ["evaluate", ckpt, "--data", str(tmp_path), "--device", "cuda"],
                 ["bench", "infer", "--model", "samplecnn_small", "--device", "cuda"],
                 ["serve", ckpt, "--device", "cuda"]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "CUDA is not available" in err
    assert main(["tag", ckpt, song, "--device", "gpu0"]) == 2
    assert "not a torch device" in capsys.readouterr().err


def test_file_warnings_are_one_stderr_line_each(ckpt, tmp_path, capsys):
    whole = _write(str(tmp_path / "whole.wav"), 1.0, 25)
    song = str(tmp_path / "cut.wav")
    data = open(whole, "rb").read()
    with open(song, "wb") as f:  # the header announces twice what the data holds
        f.write(data[: len(data) // 2])
    out = tmp_path / "o.json"
    assert main(["tag", ckpt, song, "-o", str(out), "--workers", "0"]) == 0
    rec = json.loads(out.read_text())[0]
    assert rec["error"] is None and rec["warnings"] and rec["tags"]
    assert [x for x in capsys.readouterr().err.splitlines() if "tag: note:" not in x] == [
        f"samplecnn tag: warning: {song}: {w}" for w in rec["warnings"]]
    assert main(["embed", ckpt, song, "--out", str(tmp_path / "e.npz"), "--workers", "0"]) == 0
    assert [x for x in capsys.readouterr().err.splitlines() if "embed: warning:" in x] == [
        f"samplecnn embed: warning: {song}: {w}" for w in rec["warnings"]]
    assert str(np.load(tmp_path / "e.npz")["warnings"][0]) == "; ".join(rec["warnings"])
    assert main(["tag", ckpt, song, "-o", str(out), "--workers", "0", "-q"]) == 0
    assert capsys.readouterr().err == ""
