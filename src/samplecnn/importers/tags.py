"""Tag presets of public weights, each named after the source whose outputs it names.

The MTAT and MSD lists are the data readers' (`samplecnn.data`): one source per fact.
Presets that differ from them are written as that difference, so a reader sees at once
what is special about a source.
"""
from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path
from typing import Sequence

from samplecnn.data.msd import MSD_TOP50
from samplecnn.data.mtat import MTAT_TOP50

__all__ = ["TAG_PRESETS", "PRESET_ALIASES", "AUDIOSET_LABELS", "JAMENDO_TOP50", "KERAS_MTAT_TOP50",
           "audioset_labels", "preset_tags", "resolve_tags"]

#: jongpillee/music_dataset_split `MTAT_split/top50_tags.txt`, the columns the authors'
#: Keras weights were trained on (names de-camel-cased): as MTAT_TOP50 but with
#: "female voice" before "metal".
KERAS_MTAT_TOP50 = MTAT_TOP50[:47] + ["female voice", "metal", "choral"]

#: MTG-Jamendo top-50 as sota's evaluation names the outputs: scikit-learn's
#: LabelBinarizer fitted on the tags, i.e. sorted.
JAMENDO_TOP50 = sorted([
    "genre---downtempo", "genre---ambient", "genre---rock", "instrument---synthesizer",
    "genre---atmospheric", "genre---indie", "instrument---electricpiano", "genre---newage",
    "instrument---strings", "instrument---drums", "instrument---drummachine", "genre---techno",
    "instrument---guitar", "genre---alternative", "genre---easylistening", "genre---instrumentalpop",
    "genre---chillout", "genre---metal", "mood/theme---happy", "genre---lounge", "genre---reggae",
    "genre---popfolk", "genre---orchestral", "instrument---acousticguitar", "genre---poprock",
    "instrument---piano", "genre---trance", "genre---dance", "instrument---electricguitar",
    "genre---soundtrack", "genre---house", "genre---hiphop", "genre---classical",
    "mood/theme---energetic", "genre---electronic", "genre---world", "genre---experimental",
    "instrument---violin", "genre---folk", "mood/theme---emotional", "instrument---voice",
    "instrument---keyboard", "genre---pop", "instrument---bass", "instrument---computer",
    "mood/theme---film", "genre---triphop", "genre---jazz", "genre---funk", "mood/theme---relaxing",
])


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names in PANNs' output order, from the packaged
    `audioset/class_labels_indices.csv` (columns index, mid, display_name; names hold
    commas, hence the csv module). CC BY 4.0, Gemmeke et al. 2017: see the README beside it."""
    text = resources.files("samplecnn.importers").joinpath("audioset/class_labels_indices.csv") \
        .read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError("the packaged AudioSet label file is out of order")  # a packaging bug
    return [r["display_name"] for r in rows]


#: PANNs' 527 outputs (`audioset_labels()`).
AUDIOSET_LABELS = audioset_labels()

TAG_PRESETS: dict[str, list[str]] = {
    # sota-music-tagging-models: split/mtat/tags.npy (= the data reader's order).
    "sota-mtat": list(MTAT_TOP50),
    # sota-music-tagging-models: split/msd/50tagList.txt.
    "sota-msd": list(MSD_TOP50),
    "sota-jamendo": JAMENDO_TOP50,
    # The authors' Keras weights (Lee et al. 2017).
    "keras-mtat": KERAS_MTAT_TOP50,
    # CLMR fine-tunes on the pons2017 split of musicnn-training, whose label order is
    # musicnn's MTT_LABELS (= the data reader's order).
    "clmr-mtat": list(MTAT_TOP50),
    # PANNs (audioset_tagging_cnn): metadata/class_labels_indices.csv, AudioSet's order.
    "panns-audioset": AUDIOSET_LABELS,
}
#: Older names: `mtat` and `msd` are the data readers' lists; `mtat-sota` was the name of
#: what is now `keras-mtat` (it was wrongly attributed to sota).
PRESET_ALIASES = {"mtat": "sota-mtat", "msd": "sota-msd", "mtat-sota": "keras-mtat"}


def preset_tags(name: str) -> list[str]:
    """The tag list of a preset (or alias); ValueError naming the presets otherwise."""
    key = PRESET_ALIASES.get(name, name)
    if key not in TAG_PRESETS:
        raise ValueError(f"unknown tag preset {name!r}; choose from "
                         f"{', '.join(list(TAG_PRESETS) + list(PRESET_ALIASES))}")
    return list(TAG_PRESETS[key])


def resolve_tags(tags: str | Sequence[str] | None, n_tags: int, default: str, src: str) -> list[str]:
    """Tag names from a preset name, a text file (one per line) or a list; checked
    against the `n_tags` outputs of the weights."""
    if tags is None:
        tags = default
    if isinstance(tags, str):
        key = PRESET_ALIASES.get(tags, tags)
        if key in TAG_PRESETS:
            names = list(TAG_PRESETS[key])
        elif Path(tags).is_file():
            names = [ln.strip() for ln in Path(tags).read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            raise ValueError(f"{tags}: neither a tag preset "
                             f"({', '.join(list(TAG_PRESETS) + list(PRESET_ALIASES))}) nor a file")
    else:
        names = [str(t) for t in tags]
    if len(names) != n_tags:
        raise ValueError(f"{src}: the weights have {n_tags} outputs but {len(names)} tag names "
                         "were given; pass --tags FILE with one name per output, in order")
    return names
