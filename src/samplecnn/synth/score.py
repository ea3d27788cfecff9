"""Random scores: what plays, when, how loud -- everything the tags are derived from.

A score is sampled from a seeded `numpy.random.Generator`. A latent *style* (classical,
pop, rock, techno, ambient, solo, indian) only shapes the distributions; the tags are
computed from the realised attributes (instruments, drums, tempo, mode, dynamics) by the
rules in `samplecnn.synth.tags`, never from the style name. Notes are lists of
`(onset_s, duration_s, midi_pitch, velocity)`, onsets relative to the clip start.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DIFFICULTIES = ("easy", "medium", "hard")

# instrument -> (role, lowest MIDI pitch, highest MIDI pitch)
INSTRUMENTS: dict[str, tuple[str, int, int]] = {
    "piano": ("chords", 36, 96),
    "acoustic_guitar": ("chords", 40, 79),
    "electric_guitar": ("chords", 40, 76),
    "harpsichord": ("chords", 41, 89),
    "organ": ("chords", 36, 88),
    "strings": ("chords", 43, 88),
    "synth_pad": ("chords", 43, 84),
    "choir": ("chords", 48, 76),
    "violin": ("melody", 55, 96),
    "cello": ("bass", 36, 72),
    "flute": ("melody", 60, 96),
    "synth_lead": ("melody", 52, 91),
    "sitar": ("melody", 50, 81),
    "female_voice": ("melody", 57, 79),
    "male_voice": ("melody", 45, 67),
    "bass": ("bass", 28, 52),
    "synth_bass": ("bass", 28, 52),
    "tanpura": ("drone", 36, 60),
}
VOICES = ("female_voice", "male_voice", "choir")
CLASSICAL_INSTRUMENTS = ("piano", "harpsichord", "organ", "strings", "choir", "violin", "cello", "flute")
SYNTHS = ("synth_pad", "synth_lead", "synth_bass")
DRUM_PATTERNS = ("rock", "pop", "four_on_floor", "hand")
DYNAMICS = ("quiet", "medium", "loud")

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor: every chord stays diatonic
_PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4), (0, 0, 3, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 0, 4), (0, 0, 5, 6)],
}

# style -> probability; skewed on purpose so tag frequencies look like real tag data
STYLES = {"classical": 0.27, "pop": 0.18, "rock": 0.11, "techno": 0.10,
          "ambient": 0.10, "solo": 0.15, "indian": 0.09}


@dataclass
class Part:
    """One instrument line; `notes` is a list of `(onset_s, duration_s, midi, velocity)`."""

    instrument: str
    role: str
    gain_db: float
    notes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"instrument": self.instrument, "role": self.role,
                "gain_db": round(self.gain_db, 3), "n_notes": len(self.notes)}


@dataclass
class Drums:
    """A drum part; `hits` is a list of `(onset_s, sound, velocity)`."""

    kit: str  # "acoustic" | "electronic" | "hand"
    pattern: str
    gain_db: float
    hits: list[tuple[float, str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kit": self.kit, "pattern": self.pattern, "gain_db": round(self.gain_db, 3),
                "n_hits": len(self.hits)}


@dataclass
class Mix:
    """Post-production applied to the rendered parts (see `samplecnn.synth.mix`)."""

    gain_db: float      # random offset around the dynamics' target level
    low_db: float       # low shelf (below ~200 Hz)
    mid_db: float       # peak at mid_hz
    mid_hz: float
    high_db: float      # high shelf (above ~3 kHz)
    reverb_wet: float   # 0..1
    rt60: float         # seconds
    snr_db: float       # music-to-noise ratio
    noise_slope: float  # noise power ~ 1 / f**slope (0 white, 1 pink, 2 brown)

    def to_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


@dataclass
class Score:
    """Everything a renderer needs, plus the latent style (for auditing only)."""

    style: str
    difficulty: str
    seconds: float
    tempo: float
    tonic: int          # pitch class 0 = C
    mode: str           # "major" | "minor"
    dynamics: str       # "quiet" | "medium" | "loud"
    parts: list[Part]
    drums: Drums | None
    mix: Mix
    render_seed: int    # seeds the renderer's own noise (detune, drum noise, reverb tail)

    @property
    def instruments(self) -> list[str]:
        return [p.instrument for p in self.parts]

    def to_dict(self) -> dict:
        """JSON-safe summary (no note lists: those are regenerated from the seed)."""
        return {"style": self.style, "difficulty": self.difficulty, "seconds": self.seconds,
                "tempo": round(self.tempo, 3), "tonic": self.tonic, "mode": self.mode,
                "dynamics": self.dynamics, "parts": [p.to_dict() for p in self.parts],
                "drums": None if self.drums is None else self.drums.to_dict(),
                "mix": self.mix.to_dict(), "render_seed": self.render_seed}


def _choice(rng: np.random.Generator, options: dict[str, float]) -> str:
    keys = list(options)
    p = np.array([options[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _ensemble(rng: np.random.Generator, style: str) -> tuple[list[str], str | None, dict]:
    """Sample (instruments, drum pattern or None, style parameters)."""
    r = rng.random
    if style == "classical":
        templates = [["piano"], ["strings"], ["harpsichord"], ["organ"], ["violin", "piano"],
                     ["cello", "piano"], ["flute", "strings"], ["violin", "harpsichord", "cello"],
                     ["choir", "organ"], ["choir", "strings"], ["flute", "harpsichord"],
                     ["violin", "strings", "cello"], ["flute", "piano"], ["choir"]]
        inst = list(templates[int(rng.integers(len(templates)))])
        return inst, None, {"tempo": (50, 170), "major": 0.6, "dyn": (0.3, 0.45, 0.25)}
    if style == "pop":
        inst = ["piano" if r() < 0.5 else "acoustic_guitar"]
        if r() < 0.8:
            inst.append("female_voice" if r() < 0.55 else "male_voice")
        if r() < 0.7:
            inst.append("bass")
        if r() < 0.2:
            inst.append("synth_pad")
        return inst, ("pop" if r() < 0.8 else None), {"tempo": (80, 135), "major": 0.7,
                                                     "dyn": (0.15, 0.55, 0.3)}
    if style == "rock":
        inst = ["electric_guitar", "bass"]
        if r() < 0.5:
            inst.append("male_voice" if r() < 0.7 else "female_voice")
        if r() < 0.15:
            inst.append("organ")
        return inst, "rock", {"tempo": (100, 175), "major": 0.45, "dyn": (0.05, 0.35, 0.6)}
    if style == "techno":
        inst = ["synth_bass"]
        if r() < 0.6:
            inst.append("synth_lead")
        if r() < 0.4:
            inst.append("synth_pad")
        if r() < 0.15:
            inst.append("female_voice")
        return inst, "four_on_floor", {"tempo": (120, 148), "major": 0.35, "dyn": (0.1, 0.4, 0.5)}
    if style == "ambient":
        inst = ["synth_pad"]
        for name, p in (("strings", 0.3), ("piano", 0.3), ("flute", 0.15), ("choir", 0.15)):
            if r() < p:
                inst.append(name)
        return inst, None, {"tempo": (48, 88), "major": 0.5, "dyn": (0.6, 0.35, 0.05)}
    if style == "solo":
        options = ["piano", "acoustic_guitar", "violin", "cello", "flute", "harpsichord", "organ",
                   "female_voice", "male_voice", "sitar", "synth_lead"]
        weights = np.array([3, 3, 2, 1.5, 1.5, 1, 1, 1.2, 1.2, 0.6, 0.6])
        inst = [options[int(rng.choice(len(options), p=weights / weights.sum()))]]
        return inst, None, {"tempo": (50, 165), "major": 0.6, "dyn": (0.35, 0.45, 0.2)}
    # indian: a drone under a sitar (or bansuri-like flute) melody, sometimes hand drums
    inst = ["tanpura"] if r() < 0.85 else []
    inst.append("sitar" if r() < 0.7 else "flute")
    if r() < 0.2:
        inst.append("female_voice" if r() < 0.5 else "male_voice")
    return inst, ("hand" if r() < 0.35 else None), {"tempo": (60, 150), "major": 0.5,
                                                   "dyn": (0.3, 0.5, 0.2)}


def sample_score(rng: np.random.Generator, difficulty: str = "medium", seconds: float = 10.0) -> Score:
    """Sample one score. Deterministic given the generator's state."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTIES)}")
    if not seconds > 0:
        raise ValueError(f"seconds {seconds!r}: must be positive")
    style = _choice(rng, STYLES)
    inst, pattern, sp = _ensemble(rng, style)
    if difficulty == "hard" and len(inst) < 4 and rng.random() < 0.4:
        # more polyphony: an extra part that fits the setting, so masking gets harder
        pool = [n for n in ("strings", "piano", "synth_pad", "organ", "flute", "acoustic_guitar")
                if n not in inst]
        inst.append(pool[int(rng.integers(len(pool)))])
    inst = inst[:4]
    tempo = float(rng.uniform(*sp["tempo"]))
    mode = "major" if rng.random() < sp["major"] else "minor"
    tonic = int(rng.integers(12))
    dynamics = DYNAMICS[int(rng.choice(3, p=np.array(sp["dyn"]) / sum(sp["dyn"])))]
    vel = {"quiet": 0.35, "medium": 0.6, "loud": 0.9}[dynamics]

    beat = 60.0 / tempo
    bar = 4 * beat
    start = -float(rng.uniform(0, bar))  # clips start mid-bar, like excerpts of songs
    scale = _MAJOR if mode == "major" else _MINOR
    progs = _PROGRESSIONS[mode]
    prog = progs[int(rng.integers(len(progs)))]
    n_bars = int(np.ceil((seconds - start) / bar)) + 1
    chords = [prog[b % len(prog)] for b in range(n_bars)]
    solo = len(inst) == 1 and pattern is None

    parts = []
    for name in inst:
        role, lo, hi = INSTRUMENTS[name]
        if solo and role in ("chords", "bass") and name not in ("strings", "synth_pad", "choir"):
            role = "solo"  # a solo piano/guitar/harpsichord/organ/cello plays melody over chords
        notes = _notes(rng, role, name, lo, hi, tonic, scale, chords, start, beat, seconds, vel, tempo)
        gain = float(rng.uniform(-1, 3) if role in ("melody", "solo") else rng.uniform(-5, 0))
        parts.append(Part(name, role, gain, notes))

    drums = None
    if pattern is not None:
        kit = {"four_on_floor": "electronic", "hand": "hand"}.get(pattern, "acoustic")
        if pattern == "pop" and rng.random() < 0.3:
            kit = "electronic"
        drums = Drums(kit, pattern, float(rng.uniform(-3, 1)),
                      _drum_hits(rng, pattern, start, beat, seconds, vel))

    level = {"easy": 0.4, "medium": 1.0, "hard": 1.6}[difficulty]
    mix = Mix(
        gain_db=float(rng.uniform(-2.5, 2.5) * (1.0 if difficulty != "easy" else 0.6)),
        low_db=float(rng.uniform(-5, 5) * level),
        mid_db=float(rng.uniform(-5, 5) * level),
        mid_hz=float(np.exp(rng.uniform(np.log(300), np.log(3000)))),
        high_db=float(rng.uniform(-6, 4) * level),
        reverb_wet=float(np.clip(rng.uniform(0.0, 0.3) * level + (0.2 if style == "ambient" else 0), 0, 0.8)),
        rt60=float(rng.uniform(0.4, 2.2)),
        snr_db=float({"easy": rng.uniform(32, 45), "medium": rng.uniform(18, 32),
                      "hard": rng.uniform(8, 22)}[difficulty]),
        noise_slope=float(rng.uniform(0, 2)),
    )
    return Score(style, difficulty, float(seconds), tempo, tonic, mode, dynamics, parts, drums, mix,
                 int(rng.integers(2**31)))


def _fold(pitch: int, lo: int, hi: int) -> int:
    while pitch < lo:
        pitch += 12
    while pitch > hi:
        pitch -= 12
    return pitch


def _chord_pitches(tonic: int, scale: np.ndarray, degree: int, base: int) -> list[int]:
    """Triad on `degree` of the scale, root placed at or above MIDI pitch `base`."""
    steps = [degree, degree + 2, degree + 4]
    pcs = [(tonic + scale[s % 7]) % 12 for s in steps]
    root = base + (pcs[0] - base) % 12
    out = [root]
    for pc in pcs[1:]:
        out.append(out[-1] + (pc - out[-1]) % 12)
    return out


def _notes(rng, role, name, lo, hi, tonic, scale, chords, start, beat, seconds, vel, tempo):
    """Note list for one part. Note density follows the tempo so fast/slow is audible."""
    notes: list[tuple[float, float, float, float]] = []
    bar = 4 * beat
    centre = (lo + hi) // 2 + int(rng.integers(-4, 5))  # register varies per clip

    def add(t, d, p, v):
        if t < seconds and t + d > 0:
            notes.append((round(float(t), 5), round(float(d), 5), float(p),
                          float(np.clip(v * rng.uniform(0.85, 1.1), 0.05, 1.0))))

    if role == "drone":
        pitches = [_fold(48 + tonic, lo, hi), _fold(48 + tonic + 7, lo, hi) ,
                   _fold(60 + tonic, lo, hi), _fold(48 + tonic, lo, hi)]
        step = float(rng.uniform(0.45, 0.7))
        t, k = start, 0
        while t < seconds:
            add(t, 4 * step, pitches[k % 4], vel)
            t += step
            k += 1
        return notes

    for b, degree in enumerate(chords):
        t0 = start + b * bar
        if t0 >= seconds:
            break
        if role == "bass":
            root = _fold(_chord_pitches(tonic, scale, degree, lo)[0], lo, lo + 14)
            if name == "synth_bass":  # off-beat eighths, the techno figure
                for k in range(8):
                    add(t0 + (k + 0.5) * beat / 2, beat * 0.4, root + (12 if k % 4 == 3 else 0), vel)
            elif name == "cello":
                for k in range(2):
                    add(t0 + 2 * k * beat, 2 * beat * 0.95, root + (7 if k else 0), vel)
            else:
                for k in range(4):
                    add(t0 + k * beat, beat * 0.9, root + (7 if k == 2 else 0), vel)
        elif role == "chords":
            triad = [_fold(p, lo, hi) for p in _chord_pitches(tonic, scale, degree, centre - 6)]
            if name == "electric_guitar":  # power chords: root, fifth, octave, eighths
                root = _fold(triad[0], 40, 60)
                for k in range(8):
                    for p in (root, root + 7, root + 12):
                        add(t0 + k * beat / 2, beat * 0.45, p, vel)
            elif name in ("strings", "synth_pad", "organ", "choir"):
                for p in triad + [triad[0] - 12]:
                    add(t0, bar, p, vel)
            elif name == "harpsichord" or (name == "piano" and rng.random() < 0.5):
                seq = triad + [triad[0] + 12]
                for k in range(8):  # arpeggio in eighths
                    add(t0 + k * beat / 2, beat, seq[k % 4 if k < 4 else 3 - k % 4], vel)
            elif name == "acoustic_guitar":
                for k in range(4):  # strums: strings a few ms apart
                    for j, p in enumerate([triad[0] - 12] + triad):
                        add(t0 + k * beat + 0.012 * j, beat * 0.95, p, vel * (1.0 if k % 2 == 0 else 0.75))
            else:  # piano block chords on beats 1 and 3
                for k in (0, 2):
                    for p in [triad[0] - 12] + triad:
                        add(t0 + k * beat, 2 * beat, p, vel)
        else:  # melody / solo: a walk on the scale, rhythm in beat units
            if role == "solo":
                for p in _chord_pitches(tonic, scale, degree, centre - 14):
                    add(t0, 2 * beat, p, vel * 0.8)
                    add(t0 + 2 * beat, 2 * beat, p, vel * 0.8)
            pos = 0.0
            step_idx = int(rng.integers(7)) + 7 * ((centre - tonic) // 12)
            while pos < 4:
                dur = float(rng.choice([0.5, 1.0, 1.0, 2.0]) if name not in ("sitar",) else rng.choice([0.5, 0.5, 1.0]))
                dur = min(dur, 4 - pos)
                step_idx += int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
                pitch = tonic + 12 * (step_idx // 7) + int(scale[step_idx % 7])
                if pitch > hi or pitch < lo:
                    step_idx = int(rng.integers(7)) + 7 * ((centre - tonic) // 12)
                    pitch = _fold(tonic + 12 * (step_idx // 7) + int(scale[step_idx % 7]), lo, hi)
                if rng.random() > 0.08:  # an occasional rest
                    add(t0 + pos * beat, dur * beat * 0.95, pitch, vel)
                pos += dur
    return notes


def _drum_hits(rng, pattern, start, beat, seconds, vel):
    hits: list[tuple[float, str, float]] = []
    n_beats = int(np.ceil((seconds - start) / beat)) + 1
    for k in range(n_beats):
        t = start + k * beat
        if t >= seconds:
            break
        pos = k % 4
        events: list[tuple[float, str, float]] = []
        if pattern == "four_on_floor":
            events += [(0, "kick", 1.0), (0.5, "open_hat", 0.6)]
            if pos in (1, 3):
                events.append((0, "snare", 0.8))
        elif pattern in ("rock", "pop"):
            events += [(0, "hat", 0.6), (0.5, "hat", 0.45)]
            if pos in (0, 2):
                events.append((0, "kick", 1.0))
            if pos in (1, 3):
                events.append((0, "snare", 1.0))
            if pattern == "pop" and pos == 2:
                events.append((0.5, "kick", 0.7))
        else:  # hand drums: low and high strokes
            events += [(0, "low", 0.9 if pos == 0 else 0.6), (0.5, "high", 0.6), (0.75, "high", 0.4)]
        for off, sound, v in events:
            th = t + off * beat
            if 0 <= th < seconds:
                hits.append((round(float(th), 5), sound, float(np.clip(v * vel * rng.uniform(0.85, 1.1) / 0.6, 0.05, 1.0))))
    return hits
