"""Render scores with FluidSynth and a General MIDI SoundFont (real instrument samples).

The score is written as a Standard MIDI File (format 0) and rendered offline by the
`fluidsynth` command with its own reverb and chorus off; the mono result then goes
through the same mix (EQ, reverb, noise, level) as the NumPy renderer's output.
Debian: `apt-get install fluidsynth fluid-soundfont-gm` (or `timgm6mb-soundfont`).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from samplecnn.synth.mix import apply_mix
from samplecnn.synth.render import LEVEL_DBFS
from samplecnn.synth.score import Score

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)

# General MIDI programs (0-based) for the score's instruments
GM_PROGRAMS = {
    "piano": 0, "harpsichord": 6, "organ": 16, "acoustic_guitar": 25, "electric_guitar": 30,
    "bass": 33, "synth_bass": 38, "violin": 40, "cello": 42, "strings": 48, "choir": 52,
    "female_voice": 53, "male_voice": 53, "flute": 73, "synth_lead": 81, "synth_pad": 89,
    "sitar": 104, "tanpura": 104,
}
# drum sound -> GM percussion key (channel 10)
GM_DRUMS = {"kick": 36, "snare": 38, "hat": 42, "open_hat": 46, "low": 64, "high": 63}
_TPQ = 480  # ticks per quarter note


def find_soundfont() -> Path | None:
    """The SoundFont to use: `$SAMPLECNN_SOUNDFONT`, else the first Debian GM font present."""
    env = os.environ.get("SAMPLECNN_SOUNDFONT")
    if env:
        return Path(env) if Path(env).is_file() else None
    for c in SOUNDFONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    return None


def soundfont_available() -> bool:
    """True when both the `fluidsynth` command and a GM SoundFont are installed."""
    return shutil.which("fluidsynth") is not None and find_soundfont() is not None


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def score_to_midi(score: Score) -> bytes:
    """A format-0 Standard MIDI File of the score (notes before the clip start are dropped)."""
    tempo_us = int(round(60e6 / score.tempo))
    ticks_per_s = _TPQ * score.tempo / 60.0
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message); note-offs sort first
    for ch_idx, part in enumerate(score.parts):
        ch = ch_idx if ch_idx < 9 else ch_idx + 1  # channel 10 (index 9) is percussion
        events.append((0, 0, bytes([0xC0 | ch, GM_PROGRAMS[part.instrument]])))
        for onset, dur, pitch, vel in part.notes:
            if onset < 0:
                continue
            key = int(round(pitch))
            v = max(1, min(127, int(round(vel * 127))))
            t0 = int(round(onset * ticks_per_s))
            events.append((t0, 2, bytes([0x90 | ch, key, v])))
            events.append((max(t0 + 1, int(round((onset + dur) * ticks_per_s))), 1, bytes([0x80 | ch, key, 0])))
    if score.drums is not None:
        if score.drums.kit == "electronic":
            events.append((0, 0, bytes([0xC9, 24])))  # GS "electronic" drum kit
        for onset, name, vel in score.drums.hits:
            t0 = int(round(onset * ticks_per_s))
            v = max(1, min(127, int(round(vel * 127))))
            events.append((t0, 2, bytes([0x99, GM_DRUMS[name], v])))
            events.append((t0 + _TPQ // 8, 1, bytes([0x89, GM_DRUMS[name], 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big"))
    last = 0
    for tick, _, msg in events:
        track += _varlen(tick - last) + msg
        last = tick
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TPQ) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render_soundfont(score: Score, sample_rate: int = 16000, seconds: float | None = None,
                     soundfont: str | Path | None = None) -> np.ndarray:
    """`float32 (round(seconds * sample_rate),)` the clip rendered by FluidSynth, then mixed."""
    exe = shutil.which("fluidsynth")
    sf2 = Path(soundfont) if soundfont else find_soundfont()
    if exe is None or sf2 is None or not sf2.is_file():
        raise ValueError("soundfont renderer: needs the fluidsynth command and a General MIDI "
                         "SoundFont (Debian: apt-get install fluidsynth fluid-soundfont-gm)")
    seconds = score.seconds if seconds is None else seconds
    n = int(round(seconds * sample_rate))
    with tempfile.TemporaryDirectory(prefix="samplecnn-fs-") as tmp:
        mid, wav = Path(tmp) / "score.mid", Path(tmp) / "out.wav"
        mid.write_bytes(score_to_midi(score))
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(sample_rate),
               "-T", "wav", "-F", str(wav), str(sf2), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not wav.is_file():
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ValueError(f"fluidsynth failed on {sf2}: {msg[-1] if msg else 'no output'}")
        audio, sr = sf.read(str(wav), dtype="float64", always_2d=True)
    if sr != sample_rate:
        raise ValueError(f"fluidsynth wrote {sr} Hz instead of {sample_rate} Hz")
    dry = np.zeros(n)
    mono = audio.mean(axis=1)[:n]
    dry[: len(mono)] = mono
    rng = np.random.default_rng([score.render_seed, 2])
    return apply_mix(dry, score.mix, LEVEL_DBFS[score.dynamics], sample_rate, rng)
