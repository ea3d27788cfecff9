"""The in-memory clip list that every data set reader produces and `prepare` consumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                  "test": "test"}


def normalize_split(name: str) -> str | None:
    """`"validation"`/`"val"` -> `"valid"`; unknown names -> None."""
    return _SPLIT_ALIASES.get(str(name).strip().lower())


@dataclass
class Manifest:
    """A data set as a list of clips, before decoding.

    paths: absolute audio paths `(n,)`; clip_ids `(n,)`; labels uint8 `(n, n_tags)`;
    splits `(n,)` in {"train", "valid", "test"}. `skipped` lists `(path, reason)` for clips
    left out because they cannot be used (known broken, file missing...), `dropped`
    `(path, reason)` for clips left out by a filter; `notes` are lines worth printing;
    `warnings` are likely mistakes in the data set's description (one line per kind),
    which `prepare` prints first and keeps in the store's notes.
    `expected_counts` (train, valid, test), when set, are the counts a full copy of the
    data set should give after preparation; `min_duration_s` drops shorter clips once
    decoded.
    """

    name: str
    root: str
    tags: list[str]
    clip_ids: list[str]
    paths: list[str]
    labels: np.ndarray
    splits: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expected_counts: tuple[int, int, int] | None = None
    min_duration_s: float | None = None

    def __post_init__(self):
        n = len(self.paths)
        self.labels = np.asarray(self.labels, dtype=np.uint8).reshape(n, len(self.tags))
        if not (len(self.clip_ids) == len(self.splits) == n):
            raise ValueError("manifest: clip_ids, paths, labels and splits differ in length")
        if len(set(self.clip_ids)) != n:
            dup = next(c for c in self.clip_ids if self.clip_ids.count(c) > 1)
            raise ValueError(f"manifest: duplicate clip id {dup!r}")

    def __len__(self) -> int:
        return len(self.paths)

    def split_counts(self) -> dict[str, int]:
        return {s: sum(1 for x in self.splits if x == s) for s in SPLITS}

    def subset(self, keep: np.ndarray | list[int]) -> "Manifest":
        keep = [int(i) for i in keep]
        return Manifest(
            name=self.name, root=self.root, tags=list(self.tags),
            clip_ids=[self.clip_ids[i] for i in keep], paths=[self.paths[i] for i in keep],
            labels=self.labels[keep], splits=[self.splits[i] for i in keep],
            skipped=list(self.skipped), dropped=list(self.dropped), notes=list(self.notes),
            warnings=list(self.warnings), expected_counts=self.expected_counts, min_duration_s=self.min_duration_s,
        )

    def limit(self, per_split: int | None) -> "Manifest":
        """Keep at most `per_split` clips of each split (the first ones, in order)."""
        if per_split is None:
            return self
        if per_split <= 0:
            raise ValueError(f"--limit must be positive, got {per_split}")
        seen = {s: 0 for s in SPLITS}
        keep = []
        for i, s in enumerate(self.splits):
            if seen[s] < per_split:
                keep.append(i)
                seen[s] += 1
        out = self.subset(keep)
        out.expected_counts = None  # a limited copy is not a full copy
        out.notes.append(f"limited to at most {per_split} clips per split")
        return out


def group_split(
    groups: list[str],
    valid_fraction: float,
    test_fraction: float,
    seed: int = 0,
) -> list[str]:
    """Seeded split of clips by group: all clips of one group land in one split.

    groups: `(n,)` group id per clip. Groups are shuffled with `seed` and handed to the
    split whose share of clips is furthest below its target, so the fractions are met as
    closely as whole groups allow. Returns `(n,)` split names.
    """
    for name, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction + test_fraction must be below 1")
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    names = sorted(order)
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    n = len(groups)
    target = {"valid": valid_fraction * n, "test": test_fraction * n}
    got = {"valid": 0, "test": 0}
    out = ["train"] * n
    for g in names:
        members = order[g]
        # Fill valid/test first, train takes the rest; a group goes to the split with the
        # largest remaining deficit, so long as it does not overshoot by more than half.
        deficits = {s: target[s] - got[s] for s in ("valid", "test")}
        best = max(deficits, key=lambda s: deficits[s])
        if deficits[best] > 0 and len(members) <= 2 * deficits[best] + 1e-9:
            for i in members:
                out[i] = best
            got[best] += len(members)
    return out


def read_split_lists(spec: list[str] | str | Path) -> dict[str, list[str]]:
    """Split lists: three files (train, valid, test) or a folder holding them.

    In a folder the files are found as `train`, `valid` (or `val`, `validation`) and
    `test` with any of the extensions `.txt`, `.tsv`, `.csv` or none. One entry per
    line; blank lines and `#` comments are ignored; when a line has several
    tab-separated fields (e.g. `index<TAB>path`), the last one is the entry.
    """
    if isinstance(spec, (str, Path)):
        spec = [str(spec)]
    files: dict[str, Path] = {}
    if len(spec) == 1:
        folder = Path(spec[0])
        if not folder.is_dir():
            raise ValueError(f"{folder}: split lists must be a folder or three files")
        for split in SPLITS:
            stems = {"valid": ("valid", "val", "validation")}.get(split, (split,))
            found = [folder / f"{s}{e}" for s in stems for e in (".txt", ".tsv", ".csv", "")
                     if (folder / f"{s}{e}").is_file()]
            if not found:
                raise ValueError(f"{folder}: no {split} list (expected e.g. {split}.txt)")
            files[split] = found[0]
    elif len(spec) == 3:
        files = dict(zip(SPLITS, (Path(p) for p in spec)))
    else:
        raise ValueError(f"split lists: give a folder or three files, got {len(spec)} paths")
    out: dict[str, list[str]] = {}
    for split, path in files.items():
        if not path.is_file():
            raise ValueError(f"{path}: split list not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: split list is not UTF-8 text") from None
        entries = []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entries.append(line.split("\t")[-1].strip())
        out[split] = entries
    seen: dict[str, str] = {}
    for split, entries in out.items():
        for e in entries:
            if e in seen and seen[e] != split:
                raise ValueError(f"split lists: {e!r} is in both {seen[e]} and {split}")
            seen[e] = split
    return out
