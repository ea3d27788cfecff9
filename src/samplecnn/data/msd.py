"""Million Song Dataset audio with Last.fm tags (the 50 most frequent)."""
from __future__ import annotations

import csv
import re
import sqlite3
from pathlib import Path

import numpy as np

from .manifest import Manifest, group_split, read_split_lists

#: The 50 Last.fm tags of the MSD benchmark, in the usual order (case as in Last.fm).
MSD_TOP50 = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
]

_TRACK_ID = re.compile(r"^TR[A-Z0-9]{16}$")


def msd_audio_path(root: str | Path, track_id: str) -> Path:
    """`<root>/<id[2]>/<id[3]>/<id[4]>/<track id>.mp3` (e.g. TRAAB.. -> A/A/B/TRAAB...mp3)."""
    return Path(root) / track_id[2] / track_id[3] / track_id[4] / f"{track_id}.mp3"


def _tags_from_db(db: Path, threshold: float) -> dict[str, set[str]]:
    if not db.is_file():
        raise ValueError(f"{db}: Last.fm tag database not found")
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise ValueError(f"{db}: cannot open as SQLite ({err})") from None
    try:
        marks = ",".join("?" * len(MSD_TOP50))
        rows = con.execute(
            "SELECT tids.tid, tags.tag FROM tid_tag "
            "JOIN tids ON tid_tag.tid = tids.rowid JOIN tags ON tid_tag.tag = tags.rowid "
            f"WHERE tid_tag.val > ? AND tags.tag IN ({marks})",
            (threshold, *MSD_TOP50),
        ).fetchall()
    except sqlite3.DatabaseError as err:
        raise ValueError(
            f"{db}: not a Last.fm tag database (tables tids, tags, tid_tag): {err}"
        ) from None
    finally:
        con.close()
    out: dict[str, set[str]] = {}
    for tid, tag in rows:
        out.setdefault(tid, set()).add(tag)
    return out


def _tags_from_csv(path: Path, threshold: float) -> dict[str, set[str]]:
    """CSV with a header: `track_id` (or `tid`), `tag`, and optionally `score` (or `val`)."""
    if not path.is_file():
        raise ValueError(f"{path}: tags CSV not found")
    out: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        tid_col = next((c for c in ("track_id", "tid") if c in fields), None)
        score_col = next((c for c in ("score", "val", "value") if c in fields), None)
        if tid_col is None or "tag" not in fields:
            raise ValueError(f"{path}: tags CSV needs a header with track_id and tag columns")
        top = set(MSD_TOP50)
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            tid, tag = row[tid_col], row["tag"]
            if score_col is not None:
                try:
                    score = float(row[score_col])
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: score {row[score_col]!r} "
                                     "is not a number") from None
                if score <= threshold:
                    continue
            if tag in top:
                out.setdefault(tid, set()).add(tag)
    return out


def read_msd(
    root: str | Path,
    *,
    lastfm_db: str | Path | None = None,
    tags_csv: str | Path | None = None,
    threshold: float = 50.0,
    splits: list[str] | str | Path | None = None,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_duration_s: float | None = None,
) -> Manifest:
    """MSD audio at `root` + Last.fm tags -> Manifest.

    Tags come from the Last.fm SQLite database (`lastfm_tags.db`) or a CSV of track id and
    tag (optionally with a score); a tag is positive when its score is above `threshold`.
    `splits` are three files of track ids (train, valid, test) or a folder holding them;
    listed tracks are kept even with no positive tag. Without them, every track with a
    positive tag and an audio file is split at random (seeded). Tracks whose audio is
    missing are skipped with the reason.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: MSD audio root folder not found")
    if (lastfm_db is None) == (tags_csv is None):
        raise ValueError("MSD: give exactly one of --lastfm-db or --tags-csv")
    positives = (_tags_from_db(Path(lastfm_db), threshold) if lastfm_db is not None
                 else _tags_from_csv(Path(tags_csv), threshold))
    notes = [f"tags from {lastfm_db or tags_csv}, positive when score > {threshold:g}"]
    if splits is not None:
        lists = read_split_lists(splits)
        tids, split_of = [], []
        for split, entries in lists.items():
            for e in entries:
                # Lists sometimes carry extra columns; take the field that is a track id.
                tid = next((f for f in re.split(r"[\t,; ]+", e) if _TRACK_ID.match(f)), e)
                tids.append(tid)
                split_of.append(split)
    else:
        tids = sorted(positives)
        split_of = None
    skipped, keep = [], []
    for i, tid in enumerate(tids):
        if not _TRACK_ID.match(tid):
            skipped.append((tid, "not an MSD track id"))
            continue
        if not msd_audio_path(root, tid).is_file():
            skipped.append((str(msd_audio_path(root, tid)), "file not found"))
            continue
        keep.append(i)
    if split_of is None:
        kept = [tids[i] for i in keep]
        split_of_kept = group_split(kept, valid_fraction, test_fraction, seed)
        notes.append(f"random split (seed {seed}): valid {valid_fraction:g}, "
                     f"test {test_fraction:g}")
    else:
        split_of_kept = [split_of[i] for i in keep]
        notes.append("split from the given track id lists")
    labels = np.zeros((len(keep), len(MSD_TOP50)), dtype=np.uint8)
    col = {t: j for j, t in enumerate(MSD_TOP50)}
    for r, i in enumerate(keep):
        for tag in positives.get(tids[i], ()):
            labels[r, col[tag]] = 1
    return Manifest(
        name="msd",
        root=str(root.resolve()),
        tags=list(MSD_TOP50),
        clip_ids=[tids[i] for i in keep],
        paths=[str(msd_audio_path(root, tids[i]).resolve()) for i in keep],
        labels=labels,
        splits=split_of_kept,
        skipped=skipped,
        notes=notes,
        min_duration_s=min_duration_s,
    )
