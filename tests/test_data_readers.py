"""Data set readers: MagnaTagATune, MSD + Last.fm, CSV folders -> Manifest."""
from __future__ import annotations

import csv
import json
import warnings
from collections import Counter

import numpy as np
import pytest

from samplecnn.data import (MSD_TOP50, MTAT_TOP50, group_split, read_csv_folder, read_msd,
                            read_mtat)
from samplecnn.testing.datasets import (make_csv_folder, make_msd, make_mtat,
                                        write_audio, tone)


@pytest.fixture(scope="module")
def mtat(tmp_path_factory):
    return make_mtat(tmp_path_factory.mktemp("mtat"), clips_per_folder=1)


def test_mtat_header_has_188_tag_columns_in_shuffled_order(mtat):
    with open(mtat.root / "annotations_final.csv", encoding="utf-8") as f:
        header = next(csv.reader(f, delimiter="\t"))
    assert len(header) == 190 and header[0] == "clip_id" and header[-1] == "mp3_path"
    assert [h for h in header if h in MTAT_TOP50] != MTAT_TOP50  # reordering is exercised


def test_mtat_manifest_tags_labels_splits(mtat):
    with pytest.warns(UserWarning, match="known broken"):
        m = read_mtat(mtat.root)
    assert m.tags == MTAT_TOP50
    exp = mtat.expected(duration_filter=False)
    # The reader drops untagged and broken clips; the duration filter acts at decoding.
    assert m.split_counts() == {s: len(v) for s, v in exp.items()}
    by_id = {c.clip_id: c for c in mtat.clips}
    for cid, path, split, row in zip(m.clip_ids, m.paths, m.splits, m.labels):
        clip = by_id[cid]
        assert path == str((mtat.root / clip.mp3_path).resolve())
        assert [MTAT_TOP50[j] for j in np.flatnonzero(row)] == clip.top50
        assert split == {"c": "valid", "d": "test", "e": "test", "f": "test"}.get(
            clip.folder, "train")
    assert any("known broken" in r for _, r in m.skipped)
    assert m.min_duration_s == pytest.approx(29.1)
    assert m.expected_counts is None  # a 20-clip copy is not a full copy
    with pytest.warns(UserWarning):
        assert read_mtat(mtat.root, duration_filter=False).min_duration_s is None


def test_mtat_split_lists(mtat, tmp_path):
    tagged = [c for c in mtat.clips if c.top50 and not c.broken]
    lists = {"train": tagged[:3], "valid": tagged[3:4], "test": tagged[4:6]}
    for s, clips in lists.items():
        # Published lists often carry an index column before the path.
        (tmp_path / f"{s}.tsv").write_text(
            "".join(f"{k}\t{c.mp3_path}\n" for k, c in enumerate(clips)) + f"nope/{s}.mp3\n")
    for spec in (tmp_path, [str(tmp_path / f"{s}.tsv") for s in ("train", "valid", "test")]):
        m = read_mtat(mtat.root, split_lists=spec)
        assert m.split_counts() == {"train": 3, "valid": 1, "test": 2}
        assert m.clip_ids == [c.clip_id for s in lists for c in lists[s]]
        assert any("not in annotations_final.csv" in n for n in m.notes)


def test_mtat_errors(tmp_path):
    with pytest.raises(ValueError, match="annotations_final.csv"):
        read_mtat(tmp_path)
    (tmp_path / "annotations_final.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="tab-separated"):
        read_mtat(tmp_path)


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return make_msd(tmp_path_factory.mktemp("msd"), n_tracks=6)


def test_msd_db_and_csv_agree_with_threshold(msd):
    a = read_msd(msd.root, lastfm_db=msd.db, splits=msd.splits_dir)
    b = read_msd(msd.root, tags_csv=msd.tags_csv, splits=msd.splits_dir)
    assert a.tags == MSD_TOP50
    assert a.clip_ids == b.clip_ids and np.array_equal(a.labels, b.labels)
    assert a.splits == b.splits
    assert set(a.clip_ids) == set(msd.track_ids)
    for tid, row, split in zip(a.clip_ids, a.labels, a.splits):
        assert {MSD_TOP50[j] for j in np.flatnonzero(row)} == msd.positives(tid)
        assert split == msd.split_of[tid]
    assert [r for _, r in a.skipped] == ["file not found"]
    # A higher threshold removes exactly the positives at or below it.
    c = read_msd(msd.root, lastfm_db=msd.db, splits=msd.splits_dir, threshold=99.5)
    for tid, row in zip(c.clip_ids, c.labels):
        assert {MSD_TOP50[j] for j in np.flatnonzero(row)} == msd.positives(tid, 99.5)


def test_msd_without_split_files_and_errors(msd, tmp_path):
    m = read_msd(msd.root, lastfm_db=msd.db, seed=1)
    # Only tracks with a positive tag and audio are kept.
    assert set(m.clip_ids) == {t for t in msd.track_ids if msd.positives(t)}
    assert m.labels.sum(axis=1).min() >= 1
    with pytest.raises(ValueError, match="exactly one"):
        read_msd(msd.root)
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite")
    with pytest.raises(ValueError, match="bad.db"):
        read_msd(msd.root, lastfm_db=bad)


def test_csv_folder_tags_column_and_columns_layout_agree(tmp_path):
    a = make_csv_folder(tmp_path / "a", layout="tags", with_tags_txt=True)
    b = make_csv_folder(tmp_path / "b", layout="columns")
    ma, mb = read_csv_folder(a.root), read_csv_folder(b.root)
    assert ma.tags == mb.tags == a.tags
    assert np.array_equal(ma.labels, mb.labels)
    for cid, row, split, r in zip(ma.clip_ids, ma.labels, ma.splits, a.rows):
        assert cid == r["path"].rsplit(".", 1)[0]
        assert [a.tags[j] for j in np.flatnonzero(row)] == r["tags"]
        assert split == r["split"]


def test_csv_folder_tag_order_by_frequency_without_tags_txt(tmp_path):
    fx = make_csv_folder(tmp_path, n_clips=12, with_split=False)
    m = read_csv_folder(fx.root)
    freq = Counter(t for r in fx.rows for t in r["tags"])
    assert m.tags == sorted(freq, key=lambda t: (-freq[t], t))


def test_csv_folder_group_aware_seeded_split(tmp_path):
    fx = make_csv_folder(tmp_path, n_clips=30, with_split=False, with_groups=True)
    m1 = read_csv_folder(fx.root, valid_fraction=0.2, test_fraction=0.2, seed=3)
    m2 = read_csv_folder(fx.root, valid_fraction=0.2, test_fraction=0.2, seed=3)
    assert m1.splits == m2.splits
    group_of = {r["path"].rsplit(".", 1)[0]: r["group"] for r in fx.rows}
    seen = {}
    for cid, s in zip(m1.clip_ids, m1.splits):
        assert seen.setdefault(group_of[cid], s) == s
    counts = m1.split_counts()
    assert counts["valid"] == 6 and counts["test"] == 6  # whole groups of 3 hit 20 % exactly
    others = {tuple(read_csv_folder(fx.root, valid_fraction=0.2, test_fraction=0.2,
                                    seed=s).splits) for s in range(4)}
    assert len(others) > 1  # the seed matters


def test_group_split_fractions():
    groups = [f"g{i // 2}" for i in range(200)]
    s = group_split(groups, 0.1, 0.15, seed=0)
    c = Counter(s)
    assert abs(c["valid"] - 20) <= 2 and abs(c["test"] - 30) <= 2
    with pytest.raises(ValueError):
        group_split(groups, 0.6, 0.5)


@pytest.mark.parametrize("content,message", [
    ("tags\nfoo\n", "no 'path' column"),
    ("path,tags,split\na.wav,x,training\n", "line 2: split 'training'"),
    ("path,x,y\na.wav,1,2\n", "line 2: tag 'y' value '2'"),
    ("path,tags\na.wav,x\na.wav,y\n", "duplicate clip id"),
    ("path,tags\na.wav,x,extra\n", "line 2 has 3 fields"),
])
def test_csv_folder_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "annotations.csv").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_csv_folder(tmp_path)
    assert "annotations.csv" in str(info.value)


def test_csv_folder_unknown_tag_and_missing_audio(tmp_path):
    write_audio(tmp_path / "a.wav", tone(0.2, 8000), 8000)
    (tmp_path / "tags.txt").write_text("x\ny\n")
    (tmp_path / "annotations.csv").write_text("path,tags\na.wav,x;z\n")
    with pytest.raises(ValueError, match="tag 'z' is not in"):
        read_csv_folder(tmp_path)
    (tmp_path / "annotations.csv").write_text("path,tags\na.wav,x\ngone.wav,y\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = read_csv_folder(tmp_path)
    assert m.clip_ids == ["a"] and m.tags == ["x", "y"]
    assert m.skipped == [(str(tmp_path / "gone.wav"), "file not found")]


def test_csv_tag_names_that_look_like_mistakes_are_warned_once_per_kind(tmp_path, capsys):
    from samplecnn.cli import main
    from samplecnn.testing.datasets import tone, write_audio

    root = tmp_path / "ds"
    for k, name in enumerate("abcd"):
        write_audio(root / f"{name}.wav", tone(0.3, 8000, seed=k), 8000)
    (root / "annotations.csv").write_text(
        'path,tags\na.wav,rock|pop;Piano\nb.wav,rock|pop;piano\nc.wav,"jazz, blues"\n'
        "d.wav,PIANO;indie|folk\n", encoding="utf-8")
    m = read_csv_folder(root)
    # Kept as written (the separator is ';'), and said once per kind, not once per row.
    assert {"rock|pop", "indie|folk", "jazz, blues", "Piano", "piano", "PIANO"} == set(m.tags)
    assert len(m.warnings) == 3, m.warnings
    pipe, comma, case = m.warnings
    assert "2 tag name(s) contain '|'" in pipe and "';'" in pipe
    assert "1 tag name(s) contain ','" in comma and "'jazz, blues'" in comma
    assert "differ only in case" in case and "'PIANO'/'Piano'/'piano'" in case
    # One 0/1 column per tag: a column named like a list of tags is also suspicious.
    (root / "cols.csv").write_text("path,rock;pop,piano\na.wav,1,0\nb.wav,0,1\n",
                                   encoding="utf-8")
    cols = read_csv_folder(root, csv_path=root / "cols.csv")
    assert len(cols.warnings) == 1 and "';'" in cols.warnings[0]
    (root / "clean.csv").write_text("path,tags\na.wav,rock;piano\nb.wav,piano\n",
                                    encoding="utf-8")
    assert read_csv_folder(root, csv_path=root / "clean.csv").warnings == []
    # The CLI says it before the work, as samplecnn lines, and the store keeps it.
    assert main(["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "s"),
                 "--sample-rate", "8000", "--workers", "1", "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warning" in line] == [
        f"samplecnn prepare: warning: {w}" for w in m.warnings]
    meta = json.loads((tmp_path / "s" / "meta.json").read_text("utf-8"))
    assert [n for n in meta["notes"] if "differ only in case" in n]
