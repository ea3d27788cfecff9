"""The embedded synthetic tagged-music benchmark.

Random scores (tempo, key and mode, one to four instrument parts, drums, dynamics) are
rendered to audio by a pure-NumPy synthesiser (or by FluidSynth with a General MIDI
SoundFont), mixed with random gain, EQ, reverb and noise, and labelled with 31 tags that
are exact functions of the score. `generate_dataset` writes a CSV-folder data set.

    from samplecnn.synth import generate_dataset
    generate_dataset("data/synth", clips=800, seconds=10, sample_rate=16000, seed=0)
"""
from samplecnn.synth.dataset import (FORMATS, GENERATOR_VERSION, RENDERERS, assign_splits,
                                     clip_score, generate_dataset)
from samplecnn.synth.render import LEVEL_DBFS, render, render_dry
from samplecnn.synth.score import (DIFFICULTIES, INSTRUMENTS, STYLES, Drums, Mix, Part, Score,
                                   sample_score)
from samplecnn.synth.tags import TAG_RULES, TAGS, label_vector, score_tags

__all__ = [
    "DIFFICULTIES", "Drums", "FORMATS", "GENERATOR_VERSION", "INSTRUMENTS", "LEVEL_DBFS", "Mix",
    "Part", "RENDERERS", "STYLES", "Score", "TAGS", "TAG_RULES", "assign_splits", "clip_score",
    "generate_dataset", "label_vector", "render", "render_dry", "sample_score", "score_tags",
]
