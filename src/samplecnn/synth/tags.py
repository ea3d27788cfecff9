"""Tag rules: each tag is an exact function of a score's attributes.

`TAGS` is the tag order of the data set (most frequent first at the default difficulty,
as MagnaTagATune's top-50 list is); `TAG_RULES[tag]` is `(rule, description)`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from samplecnn.synth.score import CLASSICAL_INSTRUMENTS, SYNTHS, VOICES, Score

FAST_BPM = 135.0
SLOW_BPM = 80.0
AMBIENT_BPM = 90.0
TECHNO_BPM = 118.0


def _has(*names: str) -> Callable[[Score], bool]:
    return lambda s: any(i in names for i in s.instruments)


TAG_RULES: dict[str, tuple[Callable[[Score], bool], str]] = {
    "no drums": (lambda s: s.drums is None, "no drum part"),
    "major": (lambda s: s.mode == "major", "mode is major"),
    "minor": (lambda s: s.mode == "minor", "mode is minor (natural minor)"),
    "no vocals": (lambda s: not any(i in VOICES for i in s.instruments),
                  "no female voice, male voice or choir part"),
    "drums": (lambda s: s.drums is not None, "a drum part (any kit)"),
    "classical": (lambda s: s.drums is None and all(i in CLASSICAL_INSTRUMENTS for i in s.instruments),
                  "no drums and every part is piano, harpsichord, organ, strings, choir, violin, cello or flute"),
    "piano": (_has("piano"), "a piano part"),
    "strings": (_has("strings", "violin", "cello"), "a string-ensemble, violin or cello part"),
    "vocal": (_has(*VOICES), "a female voice, male voice or choir part"),
    "guitar": (_has("acoustic_guitar", "electric_guitar"), "an acoustic or a distorted electric guitar part"),
    "slow": (lambda s: s.tempo <= SLOW_BPM, f"tempo <= {SLOW_BPM:g} BPM"),
    "loud": (lambda s: s.dynamics == "loud", "dynamics loud (about -13 dBFS RMS, bright attacks)"),
    "fast": (lambda s: s.tempo >= FAST_BPM, f"tempo >= {FAST_BPM:g} BPM"),
    "quiet": (lambda s: s.dynamics == "quiet", "dynamics quiet (about -32 dBFS RMS, soft attacks)"),
    "synth": (_has(*SYNTHS), "a synth pad, synth lead or synth bass part"),
    "bass": (_has("bass", "synth_bass"), "an electric-bass or synth-bass part"),
    "electronic": (lambda s: any(i in SYNTHS for i in s.instruments)
                   or (s.drums is not None and s.drums.kit == "electronic"),
                   "a synth part or an electronic drum kit"),
    "solo": (lambda s: len(s.parts) == 1 and s.drums is None, "exactly one part and no drums"),
    "violin": (_has("violin"), "a violin part"),
    "female": (_has("female_voice"), "a female voice part (formant-synthesised, A3-G5)"),
    "rock": (lambda s: s.drums is not None and s.drums.pattern == "rock" and "electric_guitar" in s.instruments,
             "rock drum pattern and a distorted electric guitar"),
    "flute": (_has("flute"), "a flute part"),
    "male": (_has("male_voice"), "a male voice part (formant-synthesised, A2-G4)"),
    "ambient": (lambda s: s.drums is None and s.tempo <= AMBIENT_BPM and "synth_pad" in s.instruments,
                f"no drums, tempo <= {AMBIENT_BPM:g} BPM and a synth pad"),
    "techno": (lambda s: s.drums is not None and s.drums.pattern == "four_on_floor"
               and any(i in SYNTHS for i in s.instruments) and s.tempo >= TECHNO_BPM,
               f"four-on-the-floor drums, a synth part and tempo >= {TECHNO_BPM:g} BPM"),
    "indian": (_has("sitar", "tanpura"), "a sitar or a tanpura (sitar-like drone) part"),
    "harpsichord": (_has("harpsichord"), "a harpsichord part"),
    "organ": (_has("organ"), "an organ part"),
    "cello": (_has("cello"), "a cello part"),
    "choir": (_has("choir"), "a choir part (several formant voices per note)"),
    "sitar": (_has("sitar"), "a sitar melody part"),
}

# Most frequent first (measured on 3,000 medium scores, see docs/synthetic.md).
TAGS: list[str] = [
    "no vocals", "no drums", "major", "minor", "drums", "classical", "bass", "vocal",
    "electronic", "loud", "solo", "quiet", "synth", "fast", "guitar", "piano", "slow",
    "strings", "female", "male", "flute", "ambient", "rock", "techno", "indian", "cello",
    "violin", "harpsichord", "sitar", "choir", "organ",
]
assert sorted(TAGS) == sorted(TAG_RULES)  # a programming error, not user input


def score_tags(score: Score) -> list[str]:
    """Tag names that apply to `score`, in `TAGS` order."""
    return [t for t in TAGS if TAG_RULES[t][0](score)]


def label_vector(score: Score) -> np.ndarray:
    """`uint8 (len(TAGS),)` 0/1 labels of `score` in `TAGS` order."""
    return np.array([int(bool(TAG_RULES[t][0](score))) for t in TAGS], dtype=np.uint8)
