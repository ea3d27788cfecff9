"""Small data sets in the real on-disk formats, for tests and examples.

- `make_mtat`: a MagnaTagATune tree (tab-separated `annotations_final.csv` with 188 tag
  columns, 16 kHz MP3s in folders 0-f, one of the known broken files as an empty file).
- `make_lastfm_db` / `make_msd`: MSD-layout MP3s plus a Last.fm SQLite database in the
  real schema, a tags CSV and split files.
- `make_csv_folder`: a CSV-folder data set (`annotations.csv` + audio).
- `make_bad_files`: one file per way audio can fail, with the expected reason.

Every builder returns a description of what it wrote, from which tests derive the
expected counts, labels and splits.
"""
from __future__ import annotations

import csv
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from samplecnn.data.msd import MSD_TOP50, msd_audio_path
from samplecnn.data.mtat import MTAT_BROKEN, MTAT_FOLDER_SPLIT, MTAT_FOLDERS, MTAT_TOP50

# Real MagnaTagATune tag names outside the top 50, then generated ones up to 188 columns.
_MTAT_OTHER = [
    "no singer", "harpsicord", "drum", "instrumental", "orchestra", "chant", "jazz",
    "hard rock", "trance", "heavy", "noise", "medieval", "baroque", "irish", "funky",
    "eastern", "bass", "horns", "organ", "spoken", "rap", "oriental", "banjo", "lute",
    "clapping", "world", "acoustic", "modern", "english", "spanish", "celtic", "blues",
]
MTAT_OTHER_TAGS = _MTAT_OTHER + [f"other tag {i}" for i in range(188 - 50 - len(_MTAT_OTHER))]


def tone(duration_s: float, sample_rate: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """float32 `(round(duration_s * sample_rate),)`: a seeded mix of two sines with a
    slow amplitude modulation (no noise: noise makes MP3 encoding of fixtures slow)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    f1, f2 = rng.uniform(110, 880, size=2)
    am = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    x = am * (np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t))
    return (amplitude * x / 1.5).astype(np.float32)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write float32 `(n,)` or `(n, channels)`; the format follows the extension (MP3 as
    MPEG Layer III, as MagnaTagATune ships it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if ext == ".mp3":
        sf.write(path, samples, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    elif ext in (".ogg", ".oga"):
        sf.write(path, samples, sample_rate, format="OGG", subtype="VORBIS")
    else:
        sf.write(path, samples, sample_rate)
    return path


# ---------------------------------------------------------------------------- MTAT
@dataclass
class MTATClip:
    clip_id: str
    mp3_path: str  # relative, e.g. "f/artist-album-01-title-0-29.mp3"
    tags: list[str]  # names among the 188 columns
    duration_s: float
    broken: bool = False  # written as an empty file

    @property
    def folder(self) -> str:
        return self.mp3_path.split("/", 1)[0]

    @property
    def top50(self) -> list[str]:
        return [t for t in MTAT_TOP50 if t in self.tags]


@dataclass
class MTATFixture:
    root: Path
    clips: list[MTATClip]
    columns: list[str]  # the 188 tag columns, in file order

    def expected(self, duration_filter: bool = True, min_duration_s: float = 29.1
                 ) -> dict[str, list[MTATClip]]:
        """Clips a folder-split preparation keeps, per split, in annotation order."""
        out: dict[str, list[MTATClip]] = {"train": [], "valid": [], "test": []}
        for c in self.clips:
            if not c.top50 or c.broken or c.mp3_path in MTAT_BROKEN:
                continue
            if duration_filter and c.duration_s < min_duration_s:
                continue
            out[MTAT_FOLDER_SPLIT[c.folder]].append(c)
        return out


def write_noise(path: str | Path, seconds: float, seed: int, rate: int = 16000) -> str:
    """Write `int(seconds * rate)` samples of seeded white noise (RMS 0.2) to `path`
    (format by extension, as `write_audio`); returns the path as a string."""
    rng = np.random.default_rng(seed)
    samples = (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    return str(write_audio(path, samples, rate))


def write_tiny_checkpoint(path: str | Path, tags, seed: int = 0, **overrides) -> str:
    """Save a randomly initialised `samplecnn_small` at 1/8 width (`seed`: its weights)
    with `tags` to `path`: the small real checkpoint that scoring tests load."""
    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.models import create_model

    model = create_model("samplecnn_small", width=0.125, tags=list(tags), seed=seed, **overrides)
    return str(save_checkpoint(path, model))


def make_mtat(
    root: str | Path,
    clips_per_folder: int = 2,
    duration_s: float = 29.5,
    seed: int = 0,
    extra_clips: bool = True,
) -> MTATFixture:
    """A MagnaTagATune tree at `root`: `annotations_final.csv` (tab-separated, quoted,
    clip_id + 188 tag columns in shuffled order + mp3_path) and 16 kHz mono MP3s in
    folders 0-f.

    `clips_per_folder` regular clips per folder with 1-3 top-50 tags and one other tag.
    With `extra_clips`: a clip with no top-50 tag (folder 0), a 20 s clip (folder 1,
    dropped by the 29.1 s filter), and the known broken file of folder 6 as an empty file.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    columns = list(MTAT_TOP50) + list(MTAT_OTHER_TAGS)
    rng.shuffle(columns)
    clips: list[MTATClip] = []
    cid = 2
    for folder in MTAT_FOLDERS:
        for k in range(clips_per_folder):
            n = int(rng.integers(1, 4))
            tags = list(rng.choice(MTAT_TOP50, size=n, replace=False))
            tags.append(str(rng.choice(MTAT_OTHER_TAGS)))
            name = f"{folder}/artist_{folder}{k}-album-0{k + 1}-track_{cid}-30-59.mp3"
            clips.append(MTATClip(str(cid), name, tags, duration_s))
            cid += 7
    if extra_clips:
        clips.append(MTATClip(str(cid), "0/other_artist-album-03-untagged-0-29.mp3",
                              [str(MTAT_OTHER_TAGS[0])], duration_s))
        clips.append(MTATClip(str(cid + 1), "1/short_artist-album-04-short-0-20.mp3",
                              ["piano", "classical"], 20.0))
        clips.append(MTATClip("35644", MTAT_BROKEN[0], ["female", "pop"], duration_s,
                              broken=True))
    for i, c in enumerate(clips):
        path = root / c.mp3_path
        if c.broken:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        else:
            write_audio(path, tone(c.duration_s, 16000, seed=seed * 1000 + i), 16000)
    header = ["clip_id"] + columns + ["mp3_path"]
    with open(root / "annotations_final.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(header)
        for c in clips:
            w.writerow([c.clip_id] + [int(t in c.tags) for t in columns] + [c.mp3_path])
    return MTATFixture(root=root, clips=clips, columns=columns)


# ----------------------------------------------------------------------------- MSD
def make_lastfm_db(path: str | Path, scores: dict[str, dict[str, float]]) -> Path:
    """A Last.fm tag database in the real schema: `tids(tid)`, `tags(tag)`,
    `tid_tag(tid -> tids.rowid, tag -> tags.rowid, val)`. scores: track id -> tag -> val."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tids (tid TEXT)")
    con.execute("CREATE TABLE tags (tag TEXT)")
    con.execute("CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT)")
    tag_row: dict[str, int] = {}
    for tid, tags in scores.items():
        cur = con.execute("INSERT INTO tids (tid) VALUES (?)", (tid,))
        trow = cur.lastrowid
        for tag, val in tags.items():
            if tag not in tag_row:
                tag_row[tag] = con.execute("INSERT INTO tags (tag) VALUES (?)", (tag,)).lastrowid
            con.execute("INSERT INTO tid_tag VALUES (?, ?, ?)", (trow, tag_row[tag], float(val)))
    con.commit()
    con.close()
    return path


@dataclass
class MSDFixture:
    root: Path
    track_ids: list[str]  # tracks with audio
    scores: dict[str, dict[str, float]]
    db: Path
    tags_csv: Path
    splits_dir: Path  # train.txt, valid.txt, test.txt
    split_of: dict[str, str]  # track id -> split (including the one without audio)
    missing_audio: list[str] = field(default_factory=list)

    def positives(self, tid: str, threshold: float = 50.0) -> set[str]:
        return {t for t, v in self.scores.get(tid, {}).items() if v > threshold and t in MSD_TOP50}


def _track_id(rng: np.random.Generator) -> str:
    chars = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    return "TR" + "".join(rng.choice(chars[:26], size=5)) + "".join(rng.choice(chars, size=11))


def make_msd(root: str | Path, n_tracks: int = 8, duration_s: float = 3.0, seed: int = 0,
             sample_rate: int = 22050) -> MSDFixture:
    """MSD-layout MP3s at `root`, a Last.fm db, a tags CSV (track_id,tag,score) and split
    files (`root/splits/{train,valid,test}.txt`). Scores straddle the threshold of 50;
    one listed track has no audio file; one track only has tags outside the top 50."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tids = [_track_id(rng) for _ in range(n_tracks)]
    scores: dict[str, dict[str, float]] = {}
    for k, tid in enumerate(tids):
        tags = rng.choice(MSD_TOP50, size=3, replace=False)
        # One score per band: surely positive, exactly at the threshold (negative), low.
        scores[tid] = {str(tags[0]): 100.0, str(tags[1]): 50.0, str(tags[2]): float(
            rng.integers(51, 100) if k % 2 else rng.integers(0, 50))}
        scores[tid]["seen live"] = 100.0  # a frequent Last.fm tag outside the 50
    odd = _track_id(rng)
    scores[odd] = {"seen live": 100.0, "favorites": 80.0}
    missing = _track_id(rng)
    scores[missing] = {"rock": 100.0}
    with_audio = tids + [odd]
    for i, tid in enumerate(with_audio):
        write_audio(msd_audio_path(root, tid), tone(duration_s, sample_rate, seed=seed + i),
                    sample_rate)
    db = make_lastfm_db(root / "lastfm_tags.db", scores)
    tags_csv = root / "lastfm_tags.csv"
    with open(tags_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["track_id", "tag", "score"])
        for tid, tags in scores.items():
            for tag, val in tags.items():
                w.writerow([tid, tag, val])
    order = with_audio + [missing]
    names = ["train", "valid", "test"]
    split_of = {tid: names[0] if i % 4 < 2 else names[i % 4 - 1] for i, tid in enumerate(order)}
    splits_dir = root / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    for s in names:
        (splits_dir / f"{s}.txt").write_text(
            "".join(f"{t}\n" for t in order if split_of[t] == s), encoding="utf-8")
    return MSDFixture(root=root, track_ids=with_audio, scores=scores, db=db,
                      tags_csv=tags_csv, splits_dir=splits_dir, split_of=split_of,
                      missing_audio=[missing])


# ------------------------------------------------------------------------ CSV folder
@dataclass
class CSVFixture:
    root: Path
    tags: list[str]
    rows: list[dict]  # path, tags (list), split (or None), group, clip_id (or None)


def make_csv_folder(
    root: str | Path,
    n_clips: int = 12,
    tags: tuple[str, ...] = ("drums", "piano", "voice", "noise"),
    layout: str = "tags",
    with_split: bool = True,
    with_groups: bool = False,
    with_tags_txt: bool = False,
    duration_s: float = 3.0,
    sample_rate: int = 16000,
    ext: str = ".wav",
    seed: int = 0,
) -> CSVFixture:
    """A CSV-folder data set: `root/audio/<k>.<ext>` and `root/annotations.csv`.

    layout="tags": a `tags` column with `;`-separated names (and `tags.txt` when
    `with_tags_txt`); layout="columns": one 0/1 column per tag. `with_split` adds a split
    column (train, valid, test cycling 8:2:2); `with_groups` a `group` column with
    groups of three consecutive clips.
    """
    if layout not in ("tags", "columns"):
        raise ValueError(f"layout must be 'tags' or 'columns', got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_clips):
        rel = f"audio/{k:04d}{ext}"
        write_audio(root / rel, tone(duration_s, sample_rate, seed=seed * 7919 + k), sample_rate)
        chosen = [t for t in tags if rng.random() < 0.4] or [tags[k % len(tags)]]
        split = ["train"] * 8 + ["valid"] * 2 + ["test"] * 2
        rows.append({"path": rel, "tags": chosen,
                     "split": split[k % 12] if with_split else None,
                     "group": f"g{k // 3}" if with_groups else None, "clip_id": None})
    header = ["path"]
    if layout == "tags":
        header.append("tags")
    else:
        header += list(tags)
    if with_split:
        header.append("split")
    if with_groups:
        header.append("group")
    with open(root / "annotations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            line = [r["path"]]
            line += [";".join(r["tags"])] if layout == "tags" else [int(t in r["tags"]) for t in tags]
            if with_split:
                line.append(r["split"])
            if with_groups:
                line.append(r["group"])
            w.writerow(line)
    if with_tags_txt:
        (root / "tags.txt").write_text("".join(f"{t}\n" for t in tags), encoding="utf-8")
    return CSVFixture(root=root, tags=list(tags), rows=rows)


# ------------------------------------------------------------------------- bad files
def _wav_header(channels: int, sample_rate: int, n_frames: int = 100) -> bytes:
    bits = 16
    block = max(channels, 1) * bits // 8
    data = b"\x10\x00" * (max(channels, 1) * n_frames)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block,
                          block, bits)
            + b"data" + struct.pack("<I", len(data)) + data)


def make_bad_files(folder: str | Path) -> dict[str, tuple[Path, str]]:
    """One file per failure, in `folder`: name -> (path, fragment of the expected reason).

    missing, empty, truncated (an MP3 cut after 200 bytes), header_only (a WAV without
    frames), not_audio (text named .mp3), zero_channels, absurd_rate (1 Hz), nan and inf
    (float WAVs), directory (a folder named like audio).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (folder / "missing.wav", "file not found")
    p = folder / "empty.mp3"
    p.write_bytes(b"")
    out["empty"] = (p, "empty file")
    ok = write_audio(folder / ".whole.mp3", tone(2.0, 16000, seed=1), 16000)
    p = folder / "truncated.mp3"
    p.write_bytes(ok.read_bytes()[:200])
    ok.unlink()
    out["truncated"] = (p, "cannot be decoded")
    p = folder / "header_only.wav"
    p.write_bytes(_wav_header(1, 16000, n_frames=0))
    out["header_only"] = (p, "no audio decoded")
    p = folder / "not_audio.mp3"
    p.write_text("this is a text file, not audio\n" * 20, encoding="utf-8")
    out["not_audio"] = (p, "cannot be decoded")
    p = folder / "zero_channels.wav"
    p.write_bytes(_wav_header(0, 16000))
    out["zero_channels"] = (p, "no audio channels")
    p = folder / "absurd_rate.wav"
    p.write_bytes(_wav_header(1, 1))
    out["absurd_rate"] = (p, "absurd sample rate")
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        x = tone(0.5, 16000, seed=2)
        x[100] = bad
        p = folder / f"{name}.wav"
        sf.write(p, x, 16000, subtype="FLOAT")
        out[name] = (p, "NaN or Inf")
    p = folder / "folder.wav"
    p.mkdir(exist_ok=True)
    out["directory"] = (p, "is a directory")
    return out
