"""Write a synthetic data set as a CSV folder (the format `samplecnn prepare csv` reads).

Layout of OUT_DIR:

    audio/000000.wav ...   one clip per score (PCM_16 WAV, or FLAC / MP3)
    annotations.csv        path, clip_id, split, group, then one 0/1 column per tag
    tags.txt               the tag order, one per line
    scores.jsonl           per clip: the score's attributes and its tags (for auditing)
    meta.json              generator version and every option that shapes the output

Clip i is made from `numpy.random.default_rng([seed, i])` alone, so clips can be made in
any order, in worker processes, and an interrupted run resumes where it stopped: finished
clips (written atomically) are kept, half-written temporaries are deleted, and the result
is byte-identical to an uninterrupted run.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from samplecnn.synth.render import render
from samplecnn.synth.score import DIFFICULTIES, Score, sample_score
from samplecnn.synth.tags import TAGS, label_vector, score_tags

GENERATOR_VERSION = 1
RENDERERS = ("numpy", "soundfont")
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def clip_score(seed: int, index: int, difficulty: str = "medium", seconds: float = 10.0) -> Score:
    """The score of clip `index` of a data set made with `seed`."""
    return sample_score(np.random.default_rng([seed, index]), difficulty, seconds)


def assign_splits(n: int, seed: int, fractions=SPLIT_FRACTIONS) -> list[str]:
    """`n` split names (train / valid / test) from a seeded permutation, sizes by `fractions`."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions {fractions!r}: need three non-negative numbers summing to 1")
    order = np.random.default_rng([seed, 7919]).permutation(n)
    n_valid = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    n_train = n - n_valid - n_test
    names = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    out = [""] * n
    for pos, i in enumerate(order):
        out[i] = names[pos]
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _clip_name(i: int, clips: int, ext: str) -> str:
    return f"{i:0{max(6, len(str(clips - 1)))}d}.{ext}"


def _render_one(job: tuple) -> int:
    """Worker: render clip i and write it atomically. Returns i."""
    i, seed, difficulty, seconds, sample_rate, renderer, fmt, path = job
    score = clip_score(seed, i, difficulty, seconds)
    if renderer == "soundfont":
        from samplecnn.synth.soundfont import render_soundfont
        audio = render_soundfont(score, sample_rate, seconds)
    else:
        audio = render(score, sample_rate, seconds)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    container, subtype = FORMATS[fmt]
    sf.write(str(tmp), audio, sample_rate, format=container, subtype=subtype)
    os.replace(tmp, path)
    return i


def _clip_is_complete(path: Path, n_samples: int, fmt: str) -> bool:
    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: regenerate it
        return False
    # MP3 frame counts include encoder padding, so only lossless formats are checked exactly
    return info.frames == n_samples if fmt != "mp3" else info.frames > 0


def generate_dataset(out_dir: str | os.PathLike, clips: int = 1000, seconds: float = 10.0,
                     sample_rate: int = 16000, seed: int = 0, renderer: str = "numpy",
                     difficulty: str = "medium", workers: int = 1, audio_format: str = "wav",
                     progress: bool = False) -> Path:
    """Generate (or finish) the synthetic data set in `out_dir`; returns its path."""
    out = Path(out_dir)
    if clips < 1:
        raise ValueError(f"clips {clips}: need at least one clip")
    if not seconds > 0 or seconds > 600:
        raise ValueError(f"seconds {seconds}: need 0 < seconds <= 600")
    if sample_rate < 4000 or sample_rate > 192000:
        raise ValueError(f"sample rate {sample_rate}: need 4000..192000 Hz")
    if renderer not in RENDERERS:
        raise ValueError(f"renderer {renderer!r}: expected one of {', '.join(RENDERERS)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTIES)}")
    if audio_format not in FORMATS:
        raise ValueError(f"format {audio_format!r}: expected one of {', '.join(FORMATS)}")
    if audio_format == "mp3" and "MP3" not in sf.available_formats():
        raise ValueError("format mp3: this libsndfile cannot write MP3 (needs libsndfile >= 1.1)")
    if renderer == "soundfont":
        from samplecnn.synth.soundfont import soundfont_available
        if not soundfont_available():
            raise ValueError("renderer soundfont: needs the fluidsynth command and a General MIDI "
                             "SoundFont (Debian: apt-get install fluidsynth fluid-soundfont-gm)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")

    meta = {"generator": "samplecnn.synth", "version": GENERATOR_VERSION, "seed": int(seed),
            "clips": int(clips), "seconds": float(seconds), "sample_rate": int(sample_rate),
            "renderer": renderer, "difficulty": difficulty, "format": audio_format,
            "split_fractions": list(SPLIT_FRACTIONS), "tags": TAGS}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{meta_path}: unreadable ({err}); use a new folder") from None
        diff = sorted(k for k in meta if old.get(k) != meta[k])
        if diff:
            raise ValueError(f"{out}: made with different options ({', '.join(diff)}); "
                             f"use a new folder or delete this one")
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out}: folder is not empty and is not a synth data set (no meta.json)")
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    for stale in list(audio_dir.glob(".*.partial")) + list(out.glob(".*.partial")):
        stale.unlink()  # left by an interrupted run; never a finished clip

    n_samples = int(round(seconds * sample_rate))
    names = [_clip_name(i, clips, audio_format) for i in range(clips)]
    todo = [i for i in range(clips)
            if not _clip_is_complete(audio_dir / names[i], n_samples, audio_format)]
    jobs = [(i, int(seed), difficulty, float(seconds), int(sample_rate), renderer, audio_format,
             str(audio_dir / names[i])) for i in todo]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=clips, initial=clips - len(todo), unit="clip", desc="synth")
    try:
        if workers > 1 and len(jobs) > 1:
            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_render_one, jobs, chunksize=4):
                    if bar is not None:
                        bar.update(1)
        else:
            for job in jobs:
                _render_one(job)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    _write_tables(out, seed, clips, seconds, difficulty, names)
    return out


def _write_tables(out: Path, seed: int, clips: int, seconds: float, difficulty: str,
                  names: list[str]) -> None:
    splits = assign_splits(clips, seed)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["path", "clip_id", "split", "group"] + TAGS)
    lines = []
    for i in range(clips):
        score = clip_score(seed, i, difficulty, seconds)
        clip_id = names[i].rsplit(".", 1)[0]
        # every clip is its own score, so the group-aware split degenerates to a clip split
        writer.writerow([f"audio/{names[i]}", clip_id, splits[i], clip_id]
                        + label_vector(score).tolist())
        lines.append(json.dumps({"clip_id": clip_id, "split": splits[i], "tags": score_tags(score),
                                 **score.to_dict()}))
    _atomic_write_text(out / "tags.txt", "\n".join(TAGS) + "\n")
    _atomic_write_text(out / "scores.jsonl", "\n".join(lines) + "\n")
    _atomic_write_text(out / "annotations.csv", table.getvalue())
