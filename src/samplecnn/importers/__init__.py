"""Public SampleCNN weights -> samplecnn models and checkpoints.

One converter per source layout, each checked against an independent forward pass on
files built in that layout (tests/test_importers.py):

- `import_sota`: sota-music-tagging-models' `SampleCNN` and `SampleCNNSE` (`sota.py`);
- `import_keras_h5`: the authors' Keras 1 / Keras 2 HDF5 files (`keras.py`);
- `import_clmr`: CLMR's encoder (+ linear-evaluation head) (`clmr.py`);
- `import_panns`: PANNs' LeeNet11 / LeeNet24 AudioSet checkpoints (`panns.py`).

Tag presets are named after the source whose outputs they name (`tags.py`). The
architecture is read from the weight shapes, so any m^n variant in these layouts converts.
"""
from __future__ import annotations

import os
from pathlib import Path

from samplecnn.lazy import lazy_exports

# Names are resolved lazily: the CLI's parser reads the tag presets without importing
# torch (which the converters need).
_EXPORTS = {
    "import_clmr": "clmr", "import_keras_h5": "keras", "keras_default_epsilon": "keras",
    "import_sota": "sota", "import_panns": "panns", "AUDIOSET_LABELS": "tags",
    "audioset_labels": "tags",
    "JAMENDO_TOP50": "tags", "KERAS_MTAT_TOP50": "tags", "PRESET_ALIASES": "tags",
    "TAG_PRESETS": "tags", "preset_tags": "tags", "resolve_tags": "tags",
}

__all__ = sorted([*_EXPORTS, "import_weights", "convert", "FORMATS"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

FORMATS = ("sota", "keras", "clmr", "panns")


def guess_format(src: str | os.PathLike) -> str:
    name = Path(src).name.lower()
    if name.endswith((".h5", ".hdf5", ".keras")):
        return "keras"
    return "sota"


def convert(src: str | os.PathLike, kind: str = "auto", *, head: str | os.PathLike | None = None,
            **kwargs):
    """The model of public weights `src` in layout `kind` ("sota", "keras", "clmr", "panns" or
    "auto": clmr with a `head`, else by extension, .h5/.hdf5/.keras = keras, else sota). `head`: CLMR's
    linear-evaluation file. Other keyword arguments go to the converter; None values are
    dropped so that each converter's defaults apply."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind == "auto":
        kind = "clmr" if head is not None else guess_format(src)
    if kind != "clmr" and head is not None:
        raise ValueError("--head is for CLMR weights only (their linear-evaluation checkpoint)")
    if kind != "keras":
        kwargs.pop("flip", None)
    if kind == "panns":
        from .panns import import_panns

        return import_panns(src, **kwargs)
    if kind == "keras":
        from .keras import import_keras_h5

        return import_keras_h5(src, **kwargs)
    if kind == "sota":
        from .sota import import_sota

        return import_sota(src, **kwargs)
    if kind == "clmr":
        from .clmr import import_clmr

        return import_clmr(src, head, **kwargs)
    raise ValueError(f"format must be one of {', '.join(FORMATS)} or auto, got {kind!r}")


def import_weights(src: str | os.PathLike, out: str | os.PathLike, *, kind: str = "auto", **kwargs):
    """Convert `src` (see `convert`) and save a samplecnn checkpoint at `out` (atomically).
    Returns the model."""
    from samplecnn.checkpoint import save_checkpoint

    model = convert(src, kind, **kwargs)
    save_checkpoint(out, model, imported_from=model.config.extra.get("imported_from"))
    return model
