"""MagnaTagATune from the files it ships: `annotations_final.csv` and folders 0-f."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from .manifest import Manifest, read_split_lists

#: The top-50 tags in the order most repositories use.
MTAT_TOP50 = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock",
    "fast", "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian",
    "opera", "male", "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet",
    "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats",
    "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
]

#: Empty or corrupt files of the distribution (clip ids 35644, 55753, 57881).
MTAT_BROKEN = (
    "6/norine_braun-now_and_zen-08-gently-117-146.mp3",
    "8/jacob_heringman-josquin_des_prez_lute_settings-19-gintzler__pater_noster-204-233.mp3",
    "9/american_baroque-dances_and_suites_of_rameau_and_couperin-25-le_petit_rien_xiveme_"
    "ordre_couperin-88-117.mp3",
)

MTAT_FOLDERS = "0123456789abcdef"
MTAT_FOLDER_SPLIT = {**{f: "train" for f in "0123456789ab"}, "c": "valid",
                     **{f: "test" for f in "def"}}
MTAT_N_CLIPS = 25_863
#: Counts of the paper's split on a full copy, with and without the 29.1 s filter.
MTAT_PAPER_COUNTS = (15_244, 1_529, 4_332)
MTAT_NO_DURATION_FILTER_COUNTS = (15_250, 1_529, 4_332)
MTAT_MIN_DURATION_S = 29.1


def _read_annotations(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """annotations_final.csv -> (clip_ids, mp3_paths, tag names (188), labels (n, 188))."""
    if not path.is_file():
        raise ValueError(f"{path}: not found (expected MagnaTagATune's annotations_final.csv)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise ValueError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise ValueError(
            f"{path}: not a tab-separated annotations_final.csv "
            f"(header must start with clip_id and end with mp3_path)"
        )
    tags = header[1:-1]
    clip_ids, mp3s, labels = [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}: line {lineno} has {len(row)} fields, expected {len(header)}")
        try:
            vals = [int(v) for v in row[1:-1]]
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: tag values must be 0 or 1") from None
        if any(v not in (0, 1) for v in vals):
            raise ValueError(f"{path}: line {lineno}: tag values must be 0 or 1")
        clip_ids.append(row[0].strip())
        mp3s.append(row[-1].strip())
        labels.append(vals)
    return clip_ids, mp3s, tags, np.asarray(labels, dtype=np.uint8).reshape(-1, len(tags))


def read_mtat(
    root: str | Path,
    *,
    split_lists: list[str] | str | Path | None = None,
    duration_filter: bool = True,
    annotations: str | Path | None = None,
) -> Manifest:
    """MagnaTagATune at `root` (annotations_final.csv and folders 0-f) -> Manifest.

    Top-50 tags in `MTAT_TOP50` order. Without `split_lists`: folders 0-b train, c valid,
    d-f test, clips without a top-50 tag dropped. With `split_lists` (three files of clip
    paths such as `f/xxx.mp3`, or a folder with train/valid/test lists) the lists decide
    membership and split. The three known broken files are skipped with a warning. With
    `duration_filter`, clips decoding to less than 29.1 s are dropped at preparation.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: MagnaTagATune root folder not found")
    ann = Path(annotations) if annotations else root / "annotations_final.csv"
    clip_ids, mp3s, tags188, labels188 = _read_annotations(ann)
    missing = [t for t in MTAT_TOP50 if t not in tags188]
    if missing:
        raise ValueError(f"{ann}: top-50 tags missing from the header: {', '.join(missing[:5])}")
    labels = labels188[:, [tags188.index(t) for t in MTAT_TOP50]]

    present = {f for f in MTAT_FOLDERS if (root / f).is_dir()}
    full_copy = len(clip_ids) == MTAT_N_CLIPS and present == set(MTAT_FOLDERS)
    notes, skipped, dropped = [], [], []
    keep, splits = [], []

    if split_lists is not None:
        lists = read_split_lists(split_lists)
        where = {p: i for i, p in enumerate(mp3s)}
        for split, entries in lists.items():
            unknown = [e for e in entries if e not in where]
            if unknown:
                notes.append(f"{split} list: {len(unknown)} entries not in {ann.name} "
                             f"(e.g. {unknown[0]}), ignored")
            for e in entries:
                if e in where:
                    keep.append(where[e])
                    splits.append(split)
        full_copy = False  # published lists have their own counts
        notes.append("split from the given split lists")
    else:
        no_tag = 0
        for i, p in enumerate(mp3s):
            folder = p.split("/", 1)[0]
            if folder not in MTAT_FOLDER_SPLIT:
                raise ValueError(f"{ann}: clip {clip_ids[i]}: unexpected mp3_path {p!r}")
            if labels[i].sum() == 0:
                no_tag += 1
                continue
            keep.append(i)
            splits.append(MTAT_FOLDER_SPLIT[folder])
        notes.append(f"split by folders (0-b train, c valid, d-f test); "
                     f"{no_tag} clips without a top-50 tag dropped")

    final_keep, final_splits = [], []
    absent_folders: dict[str, int] = {}
    broken_in = {"train": 0, "valid": 0, "test": 0}
    for i, split in zip(keep, splits):
        p = mp3s[i]
        if p in MTAT_BROKEN:
            warnings.warn(f"{root / p}: known broken MagnaTagATune file, skipped", stacklevel=2)
            skipped.append((str(root / p), "known broken MagnaTagATune file"))
            broken_in[split] += 1
            continue
        folder = p.split("/", 1)[0]
        if folder not in present:
            absent_folders[folder] = absent_folders.get(folder, 0) + 1
            continue
        final_keep.append(i)
        final_splits.append(split)
    if absent_folders:
        notes.append(
            f"folders absent (partial copy): {''.join(sorted(absent_folders))}; "
            f"{sum(absent_folders.values())} clips left out"
        )
    expected = None
    if full_copy:
        if duration_filter:
            # The broken files decode to nothing, so the 29.1 s filter already drops them.
            expected = MTAT_PAPER_COUNTS
        else:
            # 15,250 / 1,529 / 4,332 counts annotation rows; the broken ones cannot be kept.
            expected = tuple(n - broken_in[s] for n, s in
                             zip(MTAT_NO_DURATION_FILTER_COUNTS, ("train", "valid", "test")))
    return Manifest(
        name="mtat",
        root=str(root.resolve()),
        tags=list(MTAT_TOP50),
        clip_ids=[clip_ids[i] for i in final_keep],
        paths=[str((root / mp3s[i]).resolve()) for i in final_keep],
        labels=labels[final_keep],
        splits=final_splits,
        skipped=skipped,
        dropped=dropped,
        notes=notes,
        expected_counts=expected,
        min_duration_s=MTAT_MIN_DURATION_S if duration_filter else None,
    )
