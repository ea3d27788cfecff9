"""prepare -> SegmentStore -> SegmentDataset, resumability, bad files, CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from samplecnn.audio import load_audio
from samplecnn.cli import main
from samplecnn.data import (MTAT_TOP50, SegmentDataset, SegmentStore, prepare_store,
                            read_csv_folder, read_mtat)
from samplecnn.testing.datasets import (make_bad_files, make_csv_folder, make_mtat, tone,
                                        write_audio)

SR = 22050
SEG = 59049


@pytest.fixture(scope="module")
def mtat_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("mtat")
    fx = make_mtat(base / "mtat", clips_per_folder=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = read_mtat(fx.root)
    report = prepare_store(m, base / "store", sample_rate=SR, workers=2, progress=False)
    return fx, m, report, SegmentStore(base / "store")


def test_mtat_store_counts_labels_and_contents(mtat_store):
    fx, m, report, store = mtat_store
    exp = fx.expected(duration_filter=True)
    assert report.counts == {s: len(v) for s, v in exp.items()}
    assert store.split_counts() == report.counts
    assert store.tags == MTAT_TOP50 and store.sample_rate == SR and store.dataset == "mtat"
    order = [c for c in fx.clips if any(c in v for v in exp.values())]
    assert list(store.clip_ids) == [c.clip_id for c in order]
    for i, c in enumerate(order):
        assert [MTAT_TOP50[j] for j in np.flatnonzero(store.labels[i])] == c.top50
        assert store.splits[i] in ("train", "valid", "test")
        assert c in exp[store.splits[i]]
    assert store.labels.dtype == np.uint8 and store.lengths.dtype == np.int64
    # The short clip is dropped by the 29.1 s filter, the broken one skipped.
    assert [Path(p).name for p, _ in report.dropped] == ["short_artist-album-04-short-0-20.mp3"]
    assert any("known broken" in r for _, r in report.skipped)
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["skipped"] and meta["dropped"] and meta["counts"] == report.counts
    # Decoded once at 22,050 Hz, int16: equal to decoding again up to quantisation.
    for i in (0, len(store) - 1):
        ref = load_audio(store.paths[i], SR).samples
        got = store.clip_float(i)
        assert store.clip(i).dtype == np.int16 and len(got) == len(ref) == store.lengths[i]
        assert np.abs(got - ref).max() <= 1.0 / 32767 + 1e-7
    assert store.offsets[0] == 0
    assert np.array_equal(store.offsets[1:], np.cumsum(store.lengths)[:-1])
    assert (store.path / "audio.i16").stat().st_size == 2 * store.lengths.sum()
    assert not Path(str(store.path) + ".partial").exists()


def test_segment_dataset_consecutive_paper_layout(mtat_store):
    _, _, _, store = mtat_store
    ds = SegmentDataset(store, "train", SEG)
    train = store.split_indices("train")
    # 29.5 s at 22,050 Hz holds 11 segments of 59,049; the paper takes the first 10.
    assert len(ds) == 10 * len(train)
    assert np.array_equal(ds.clip_index, np.repeat(train, 10))
    item = ds[13]
    c = int(ds.clip_index[13])
    assert item["audio"].shape == (1, SEG) and item["audio"].dtype == torch.float32
    assert item["target"].dtype == torch.float32 and item["target"].shape == (50,)
    assert int(item["clip"]) == c
    np.testing.assert_array_equal(item["target"].numpy(), store.labels[c])
    np.testing.assert_allclose(item["audio"][0].numpy(),
                               store.clip_float(c)[3 * SEG : 4 * SEG])
    every = SegmentDataset(store, "test", SEG, segments_per_clip=None)
    n_full = store.lengths[store.split_indices("test")] // SEG
    assert len(every) == n_full.sum()


def test_segment_dataset_random_crops_seeded_by_epoch(mtat_store):
    _, _, _, store = mtat_store
    ds = SegmentDataset(store, "valid", SEG, mode="random", segments_per_clip=4, seed=7)
    a = ds.starts.copy()
    ds.set_epoch(1)
    b = ds.starts.copy()
    ds.set_epoch(0)
    assert np.array_equal(ds.starts, a) and not np.array_equal(a, b)
    assert np.all(ds.starts >= 0)
    assert np.all(ds.starts + SEG <= store.lengths[ds.clip_index])
    other = SegmentDataset(store, "valid", SEG, mode="random", segments_per_clip=4, seed=8)
    assert not np.array_equal(other.starts, a)
    i = 2
    c, s = int(ds.clip_index[i]), int(ds.starts[i])
    np.testing.assert_allclose(ds[i]["audio"][0].numpy(), store.clip_float(c)[s : s + SEG])
    with pytest.raises(ValueError):
        SegmentDataset(store, "valid", SEG, mode="random", segments_per_clip=None)
    with pytest.raises(ValueError, match="unknown split"):
        SegmentDataset(store, "dev", SEG)


def test_dataloader_workers_reopen_the_store(mtat_store):
    _, _, _, store = mtat_store
    ds = SegmentDataset(store, "test", SEG, segments_per_clip=2)
    store.audio  # open the map in the parent first: workers must not reuse it blindly
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    audio = torch.cat([b["audio"] for b in batches])
    clips = torch.cat([b["clip"] for b in batches])
    assert audio.shape == (len(ds), 1, SEG)
    assert np.array_equal(clips.numpy(), ds.clip_index)
    np.testing.assert_allclose(audio[1, 0].numpy(), ds[1]["audio"][0].numpy())


def _csv_with_bad_files(root: Path) -> tuple[list[str], dict]:
    """A CSV folder with 4 good clips (one short, one silent) and every bad file."""
    good = []
    for k, dur in enumerate((3.0, 2.0, 0.5)):
        write_audio(root / f"good{k}.wav", tone(dur, 16000, seed=k), 16000)
        good.append(f"good{k}.wav")
    write_audio(root / "silent.flac", np.zeros(16000, np.float32), 16000)
    good.append("silent.flac")
    bad = make_bad_files(root / "bad")
    lines = ["path,tags,split"]
    for k, p in enumerate(good):
        lines.append(f"{p},{'a;b' if k % 2 else 'b'},{['train', 'valid', 'test', 'train'][k]}")
    for name, (p, _) in bad.items():
        lines.append(f"{p.relative_to(root)},b,train")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    return good, bad


def test_folder_with_bad_files_prepares_the_good_ones(tmp_path):
    good, bad = _csv_with_bad_files(tmp_path / "ds")
    m = read_csv_folder(tmp_path / "ds")
    report = prepare_store(m, tmp_path / "store", sample_rate=16000, min_samples=16000,
                           workers=2, progress=False)
    store = SegmentStore(tmp_path / "store")
    assert list(store.clip_ids) == [g.rsplit(".", 1)[0] for g in good]
    assert store.tags == ["b", "a"]  # by frequency over all rows
    assert store.labels.tolist() == [[1, 0], [1, 1], [1, 0], [1, 1]]
    assert list(store.splits) == ["train", "valid", "test", "train"]
    assert store.padded.tolist() == [False, False, True, False]
    assert store.silent.tolist() == [False, False, False, True]
    assert store.lengths[2] == 16000 and store.durations[2] == pytest.approx(0.5)
    reasons = dict(report.skipped)
    assert len(report.skipped) == len(bad)
    for name, (p, fragment) in bad.items():
        key = str(p.resolve())
        assert key in reasons, name
        assert fragment in reasons[key], (name, reasons[key])
    assert "skipped files: %d" % len(bad) in report.summary()


_KILLABLE = """
import sys, time
import samplecnn.data.prepare as prep
from samplecnn.data import read_csv_folder
real = prep.load_audio
def slow(*a, **k):
    time.sleep(0.05)  # make the run long enough to be killed midway
    return real(*a, **k)
prep.load_audio = slow
prep.prepare_store(read_csv_folder(sys.argv[1]), sys.argv[2], sample_rate=8000,
                   min_samples=100, workers=1, progress=False)
"""


def test_killed_prepare_resumes_without_loss_or_duplicates(tmp_path):
    fx = make_csv_folder(tmp_path / "ds", n_clips=60, duration_s=0.5, sample_rate=8000)
    ref = prepare_store(read_csv_folder(fx.root), tmp_path / "ref", sample_rate=8000,
                        min_samples=100, workers=1, progress=False)
    out = tmp_path / "store"
    partial = tmp_path / "store.partial"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(fx.root), str(out)],
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            done = list((partial / "clips").glob("*.json")) if partial.exists() else []
            if len(done) >= 15 or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "prepare finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    n_done = len(list((partial / "clips").glob("*.json")))
    assert 15 <= n_done < 60
    assert not out.exists()
    with pytest.raises(ValueError, match="not a complete segment store"):
        SegmentStore(partial)
    report = prepare_store(read_csv_folder(fx.root), out, sample_rate=8000, min_samples=100,
                           workers=2, progress=False)
    assert report.resumed >= n_done and report.decoded == 60 - report.resumed
    a, b = SegmentStore(tmp_path / "ref"), SegmentStore(out)
    assert len(b) == 60 and list(a.clip_ids) == list(b.clip_ids)
    assert len(set(b.clip_ids)) == 60
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.lengths, b.lengths)
    assert (tmp_path / "ref" / "audio.i16").read_bytes() == (out / "audio.i16").read_bytes()
    assert ref.counts == report.counts
    assert not partial.exists() and not (out / "clips").exists()


def test_rerun_on_a_complete_store_is_a_no_op_and_other_inputs_are_refused(tmp_path):
    fx = make_csv_folder(tmp_path / "ds", n_clips=4, duration_s=0.3, sample_rate=8000)
    m = read_csv_folder(fx.root)
    first = prepare_store(m, tmp_path / "s", sample_rate=8000, workers=1, progress=False)
    meta = (tmp_path / "s" / "meta.json").read_bytes()
    again = prepare_store(m, tmp_path / "s", sample_rate=8000, workers=1, progress=False)
    assert again.reused and again.decoded == 0 and not first.reused
    assert again.counts == first.counts and again.skipped == first.skipped
    assert "nothing to do" in again.summary()
    assert (tmp_path / "s" / "meta.json").read_bytes() == meta  # untouched
    # Other options, other labels or a changed audio file: not the store asked for.
    with pytest.raises(ValueError, match="other inputs or options"):
        prepare_store(m, tmp_path / "s", sample_rate=16000, workers=1, progress=False)
    relabelled = m.subset(range(len(m)))
    relabelled.labels[0] = 1 - relabelled.labels[0]
    with pytest.raises(ValueError, match="other inputs or options"):
        prepare_store(relabelled, tmp_path / "s", sample_rate=8000, workers=1, progress=False)
    write_audio(m.paths[0], tone(0.4, 8000, seed=9), 8000)
    with pytest.raises(ValueError, match="other inputs or options"):
        prepare_store(m, tmp_path / "s", sample_rate=8000, workers=1, progress=False)
    r = prepare_store(m, tmp_path / "s", sample_rate=16000, workers=1, progress=False,
                      overwrite=True)
    assert SegmentStore(r.store).sample_rate == 16000 and not r.reused
    # The lock file stays (removing it would race with a process opening it).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.lock", "ds", "s"]


def test_a_store_being_prepared_refuses_a_second_prepare(tmp_path, capsys):
    from samplecnn.locks import exclusive

    fx = make_csv_folder(tmp_path / "ds", n_clips=3, duration_s=0.3, sample_rate=8000)
    args = ["prepare", "csv", "--root", str(fx.root), "--out", str(tmp_path / "s"),
            "--sample-rate", "8000", "--workers", "1", "--quiet"]
    with exclusive(tmp_path / "s", "store"):  # what a running prepare holds
        assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("csv: ")]
    assert len(err) == 1 and "in use by another samplecnn process" in err[0], err
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    assert main(args) == 0


def test_cli_prepare_csv(tmp_path, capsys):
    fx = make_csv_folder(tmp_path / "ds", n_clips=6, duration_s=0.5, sample_rate=8000,
                         with_split=False)
    args = ["prepare", "csv", "--root", str(fx.root), "--out", str(tmp_path / "s"),
            "--sample-rate", "8000", "--workers", "1", "--quiet", "--valid-fraction", "0.2",
            "--test-fraction", "0.2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    store = SegmentStore(tmp_path / "s")
    assert len(store) == 6 and "(total 6)" in out and "skipped files: 0" in out
    assert main(args) == 0  # a rerun on the complete store: nothing to do
    out = capsys.readouterr().out
    assert "nothing to do" in out and "(total 6)" in out and "(0 clips decoded)" in out
    assert main(args[:6] + ["--sample-rate", "16000"] + args[8:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "other inputs or options" in err[1] and "--overwrite" in err[1]
    assert main(["prepare", "mtat", "--root", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


def test_segment_store_rejects_incomplete_or_foreign_folders(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        SegmentStore(tmp_path / "none")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no meta.json"):
        SegmentStore(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a samplecnn segment store"):
        SegmentStore(tmp_path / "d")


def test_real_mtat_clip_passes_the_duration_filter(tmp_path):
    import shutil

    from samplecnn.testing.datasets import MTAT_OTHER_TAGS

    real = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
            / "joram-moments_of_clarity-08-solipsism-59-88.mp3")
    if not real.exists():
        pytest.skip("shared real clip not available")
    rel = f"e/{real.name}"
    (tmp_path / "e").mkdir()
    shutil.copy(real, tmp_path / rel)
    columns = list(MTAT_OTHER_TAGS) + list(MTAT_TOP50)
    header = "\t".join(f'"{c}"' for c in ["clip_id"] + columns + ["mp3_path"])
    row = "\t".join(f'"{v}"' for v in ["58", *(int(c == "techno") for c in columns), rel])
    (tmp_path / "annotations_final.csv").write_text(header + "\n" + row + "\n")
    report = prepare_store(read_mtat(tmp_path), tmp_path / "s", workers=1, progress=False)
    store = SegmentStore(report.store)
    # Header: 29.271 s; decoded: 465,984 samples = 29.124 s, above the 29.1 s filter.
    assert report.counts == {"train": 0, "valid": 0, "test": 1}
    assert store.durations[0] == pytest.approx(465_984 / 16000)
    assert store.lengths[0] == len(load_audio(real, SR).samples)
    assert [store.tags[j] for j in np.flatnonzero(store.labels[0])] == ["techno"]


def test_a_failed_clip_write_leaves_no_temp_file_and_is_recorded(tmp_path, monkeypatch):
    # prepare writes through samplecnn.atomic: a write that fails midway removes its
    # temporary file, and the clip is recorded as skipped with the reason.
    import samplecnn.data.prepare as prep

    write_audio(tmp_path / "a.wav", tone(0.2, 8000), 8000)
    clips = tmp_path / "clips"
    clips.mkdir()

    def torn_save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY half a header")
        raise OSError("disk full")

    monkeypatch.setattr(prep.np, "save", torn_save)
    i, info = prep.decode_clip((0, str(tmp_path / "a.wav"), str(clips), 8000, 100, None))
    assert info["status"] == "skipped" and "disk full" in info["reason"]
    assert sorted(os.listdir(clips)) == ["0.json"]


def test_int16_scale_is_written_in_one_place():
    from samplecnn.data.store import INT16_SCALE

    src = Path(__file__).resolve().parents[1] / "src" / "samplecnn"
    holders = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if "32767" in p.read_text("utf-8"))
    assert holders == ["data/store.py"] and INT16_SCALE == 32767.0
    import samplecnn.data.prepare as prep

    assert not hasattr(prep, "open_store")


def test_prepare_stores_names_that_are_not_utf8_escaped_and_reversible(tmp_path):
    from samplecnn.paths import escape_path

    root = tmp_path / "ds"
    root.mkdir()
    raw = os.fsencode(root) + b"/bad\xffname.wav"
    try:
        open(raw, "wb").close()
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    import soundfile as sf

    sf.write(raw, tone(0.5, 8000, seed=1), 8000)
    write_audio(root / "good.wav", tone(0.5, 8000, seed=2), 8000)
    empty = os.fsdecode(os.fsencode(root) + b"/empty\xff.wav")
    open(empty, "wb").close()
    # The CSV spells the names as samplecnn writes them (escape_path).
    (root / "annotations.csv").write_text(
        "path,tags,split\nbad\\xffname.wav,a,train\ngood.wav,b,train\nempty\\xff.wav,a,test\n",
        encoding="utf-8")
    m = read_csv_folder(root)
    report = prepare_store(m, tmp_path / "s", sample_rate=8000, min_samples=100, workers=2,
                           progress=False)
    store = SegmentStore(tmp_path / "s")
    assert list(store.clip_ids) == ["bad\\xffname", "good"]
    real = os.path.realpath(os.fsdecode(raw))
    assert store.paths[0] == escape_path(real) and store.paths[0].endswith("bad\\xffname.wav")
    assert os.fsencode(store.source_path(0)) == os.fsencode(real)
    ref = load_audio(store.source_path(0), 8000).samples
    assert np.abs(store.clip_float(0) - ref).max() <= 1.0 / 32767 + 1e-7
    meta = json.loads((tmp_path / "s" / "meta.json").read_text("utf-8"))
    assert meta["skipped"] == [[escape_path(os.path.realpath(empty)), "empty file (0 bytes)"]]
    assert report.skipped == [tuple(x) for x in meta["skipped"]]
    assert "empty\\xff.wav" in report.summary()


def test_prepare_stores_a_truncated_file_and_lists_its_warning(tmp_path):
    root = tmp_path / "ds"
    whole = write_audio(root / "whole.wav", tone(2.0, 8000, seed=3), 8000)
    data = whole.read_bytes()
    (root / "cut.wav").write_bytes(data[: len(data) // 2])
    (root / "annotations.csv").write_text("path,tags,split\nwhole.wav,a,train\ncut.wav,b,train\n",
                                          encoding="utf-8")
    report = prepare_store(read_csv_folder(root), tmp_path / "s", sample_rate=8000,
                           min_samples=100, workers=1, progress=False)
    store = SegmentStore(tmp_path / "s")
    assert list(store.clip_ids) == ["whole", "cut"] and 0.9 < store.durations[1] < 1.1
    meta = json.loads((tmp_path / "s" / "meta.json").read_text("utf-8"))
    assert len(meta["warnings"]) == 1
    path, warning = meta["warnings"][0]
    assert path.endswith("cut.wav") and warning.startswith("truncated: the header announces 2.000 s")
    assert report.warnings == [(path, warning)]
    assert "files with warnings (stored): 1" in report.summary() and warning in report.summary()
