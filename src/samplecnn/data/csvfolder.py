"""CSV-folder data sets: `DIR/annotations.csv` plus audio files (see docs/data.md)."""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..paths import unescape_path
from .manifest import Manifest, group_split, normalize_split

#: Columns of annotations.csv that are never tags.
RESERVED_COLUMNS = ("path", "tags", "split", "group", "clip_id")
#: Separator of tag names in the `tags` column.
TAG_SEPARATOR = ";"
#: Characters that, inside a tag name, suggest another separator was meant.
_SEPARATOR_LIKE = (";", "|", ",")


_ESCAPE_TOKEN = re.compile(r"(\\\\|\\x[0-9a-fA-F]{2})")


def _clip_id(path_text: str) -> str:
    """The default clip id: the path as written, without its extension, `\\` as `/`
    (Windows-style folders); escapes (`\\xHH`, `\\\\`) stay as written, so the id is
    text whatever the file name's bytes."""
    parts = _ESCAPE_TOKEN.split(str(Path(path_text).with_suffix("")))
    return "".join(s if k % 2 else s.replace("\\", "/") for k, s in enumerate(parts))


def tag_warnings(tags: list[str], where: str, separator: str | None) -> list[str]:
    """Likely mistakes in tag names, one line per kind: names holding a separator-like
    character other than `separator` (`a|b` read as one tag), and names that differ only
    in case (`Piano` and `piano` are two tags)."""
    out = []
    for ch in _SEPARATOR_LIKE:
        if ch == separator:
            continue
        bad = [t for t in tags if ch in t]
        if bad:
            how = (f"the tags column separates tags with {separator!r}" if separator
                   else "each column is one tag")
            out.append(f"{where}: {len(bad)} tag name(s) contain {ch!r}, e.g. {bad[0]!r}; "
                       f"{how}, so each is one tag (see docs/data.md)")
    groups: dict[str, list[str]] = {}
    for t in tags:
        groups.setdefault(t.casefold(), []).append(t)
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        shown = "; ".join("/".join(repr(t) for t in g) for g in clashes[:3])
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        out.append(f"{where}: {len(clashes)} group(s) of tag names differ only in case "
                   f"({shown}{more}); they are distinct tags")
    return out


def read_csv_folder(
    root: str | Path,
    *,
    csv_path: str | Path | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    min_duration_s: float | None = None,
) -> Manifest:
    """A CSV-folder data set -> Manifest.

    Tags come from a `tags` column (names separated by `;`, tag order from `tags.txt`
    when present, else by descending frequency then name) or from one 0/1 column per tag
    (column order). Tag names holding `|` or `,` (or `;` as a column name), and names
    that differ only in case, are kept as written and reported in `Manifest.warnings`.
    `path` is relative to `root` or absolute, spelled as samplecnn writes file names
    (`samplecnn.paths.escape_path`: `\\xHH` for a byte that is not UTF-8, `\\\\` for
    a backslash), so any file name can be listed. Without a `split` column the split is
    made here, seeded and group-aware when a `group` column exists. Clips whose audio is
    missing are skipped with the reason.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: data set folder not found")
    path = Path(csv_path) if csv_path else root / "annotations.csv"
    if not path.is_file():
        raise ValueError(f"{path}: annotations CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise ValueError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    if "path" not in header:
        raise ValueError(f"{path}: no 'path' column in the header")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in the header")
    col = {h: j for j, h in enumerate(header)}
    records = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}: line {lineno} has {len(row)} fields, expected {len(header)}")
        rec = {h: row[j].strip() for h, j in col.items()}
        if not rec["path"]:
            raise ValueError(f"{path}: line {lineno}: empty path")
        records.append((lineno, rec))

    if "tags" in col:
        per_clip = [[t.strip() for t in r["tags"].split(TAG_SEPARATOR) if t.strip()]
                    for _, r in records]
        tags_txt = root / "tags.txt"
        if tags_txt.is_file():
            tags = [t.strip() for t in tags_txt.read_text(encoding="utf-8").splitlines()
                    if t.strip()]
            known = set(tags)
            for (lineno, _), names in zip(records, per_clip):
                bad = [t for t in names if t not in known]
                if bad:
                    raise ValueError(f"{path}: line {lineno}: tag {bad[0]!r} is not in {tags_txt}")
        else:
            freq = Counter(t for names in per_clip for t in names)
            tags = sorted(freq, key=lambda t: (-freq[t], t))
        index = {t: j for j, t in enumerate(tags)}
        labels = np.zeros((len(records), len(tags)), dtype=np.uint8)
        for i, names in enumerate(per_clip):
            for t in names:
                labels[i, index[t]] = 1
    else:
        tags = [h for h in header if h not in RESERVED_COLUMNS]
        if not tags:
            raise ValueError(f"{path}: no tags (need a 'tags' column or one column per tag)")
        labels = np.zeros((len(records), len(tags)), dtype=np.uint8)
        for i, (lineno, r) in enumerate(records):
            for j, t in enumerate(tags):
                v = r[t]
                if v in ("1", "1.0", "true", "True"):
                    labels[i, j] = 1
                elif v not in ("0", "0.0", "", "false", "False"):
                    raise ValueError(f"{path}: line {lineno}: tag {t!r} value {v!r} is not 0/1")

    warnings = tag_warnings(list(tags), str(path), TAG_SEPARATOR if "tags" in col else None)
    clip_ids = []
    for _, r in records:
        cid = r.get("clip_id") or _clip_id(r["path"])
        clip_ids.append(cid)
    dup = [c for c, n in Counter(clip_ids).items() if n > 1]
    if dup:
        raise ValueError(f"{path}: duplicate clip id {dup[0]!r}")

    notes = []
    if "split" in col:
        splits = []
        for lineno, r in records:
            s = normalize_split(r["split"])
            if s is None:
                raise ValueError(
                    f"{path}: line {lineno}: split {r['split']!r} is not train, valid or test"
                )
            splits.append(s)
        notes.append("split from the 'split' column")
    else:
        groups = ([r["group"] or f"\0{i}" for i, (_, r) in enumerate(records)]
                  if "group" in col else [f"\0{i}" for i in range(len(records))])
        splits = group_split(groups, valid_fraction, test_fraction, seed)
        notes.append(f"{'group-aware ' if 'group' in col else ''}random split (seed {seed}): "
                     f"valid {valid_fraction:g}, test {test_fraction:g}")

    keep, skipped = [], []
    abspaths = []
    for i, (_, r) in enumerate(records):
        p = Path(unescape_path(r["path"]))
        p = p if p.is_absolute() else root / p
        abspaths.append(str(p.resolve()))
        if not p.exists():  # anything else that is wrong is for the decoder to report
            skipped.append((str(p), "file not found"))
            continue
        keep.append(i)
    return Manifest(
        name="csv",
        root=str(root.resolve()),
        tags=tags,
        clip_ids=[clip_ids[i] for i in keep],
        paths=[abspaths[i] for i in keep],
        labels=labels[keep],
        splits=[splits[i] for i in keep],
        skipped=skipped,
        notes=notes,
        warnings=warnings,
        min_duration_s=min_duration_s,
    )
