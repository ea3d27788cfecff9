"""beets plugin `samplecnn`: tag a music library with a SampleCNN model.

Enable it with `plugins: samplecnn` and give a model in beets' config.yaml:

    samplecnn:
        model: sota-mtat-sample      # a checkpoint, an ONNX file or public weights' name
        auto: yes                    # tag during `beet import`

`beet samplecnn [-f] [-w|-W] [QUERY]` tags the matching items that have no results yet.
Each item gets `samplecnn_labels` (the decided tags, also written to the file as
`SAMPLECNN_TAGS`), `samplecnn_model` (model name and weights digest) and, with `scores`,
one float field per tag. See docs/beets.md.

The model is loaded on first use only: `beet ls` with the plugin enabled imports neither
torch nor ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading

import mediafile
from beets import config as beets_config
from beets import ui
from beets.dbcore import types as dbtypes
from beets.library import Item
from beets.plugins import BeetsPlugin
from beets.util import displayable_path

from samplecnn.tagging.library import (FILE_TAG, LABELS_FIELD, MODEL_FIELD, LibraryTagger, genre_map,
                                       genres_for, merge_genres, score_fields)

#: Where the plugin records the score fields it has written, so that they are typed
#: (`beet ls samplecnn_rock:0.5..`) without loading a model: in beets' config folder.
FIELDS_FILE = "samplecnn_fields.json"
_SCORE = dbtypes.Float(3)


class LabelsType(dbtypes.DelimitedString):
    """`samplecnn_labels`: a multi-valued field held as a tuple. beets' change display
    compares list values with `set(new)`, which fails for a removed list field, and
    `beet modify samplecnn_labels!` is how a user undoes the plugin."""

    model_type = tuple

    def __init__(self) -> None:
        super().__init__(dbtypes.MULTI_VALUE_DELIMITER)

    def normalize(self, value):
        return tuple(super().normalize(list(value) if isinstance(value, tuple) else value))

    def parse(self, string: str):
        return tuple(super().parse(string))


_LABELS = LabelsType()
_MODEL_SUFFIXES = (".ckpt", ".pt", ".pth", ".onnx")


def labels_media_field() -> mediafile.ListMediaField:
    """`SAMPLECNN_TAGS`: a TXXX frame in ID3, a Vorbis comment in FLAC/Ogg/Opus, a
    freeform atom in MP4, an attribute in ASF; one value per label."""
    field = mediafile.ListMediaField(
        mediafile.MP3ListDescStorageStyle(desc=FILE_TAG),
        mediafile.MP4ListStorageStyle(f"----:com.apple.iTunes:{FILE_TAG}"),
        mediafile.ListStorageStyle(FILE_TAG),
        mediafile.ASFStorageStyle(FILE_TAG),
    )
    field.samplecnn = True  # recognised by a second plugin instance (see _register_field)
    return field


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C waits until the block ends: a file's tag write and the database row that
    records it are done together (mutagen rewrites tags in place)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def drop_absent_labels(item, path, tags) -> None:
    """beets' `write` event: an item without labels (never tagged, or undone with `beet
    modify samplecnn_labels!`) has no SAMPLECNN_TAGS in its file either."""
    labels = tags.get(LABELS_FIELD)
    tags[LABELS_FIELD] = list(labels) if labels else None


class SampleCNNPlugin(BeetsPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.config.add({
            "model": None,
            "auto": False,
            "write": None,          # None: beets' import.write (ui.should_write)
            "threshold": None,      # None: the model's stored thresholds
            "at_least_one": False,
            "force": False,
            "scores": False,
            "batch_size": 16,
            "workers": 1,
            "device": "cpu",
            "genres": False,
        })
        self._engine: LibraryTagger | None = None
        self._register_field()
        if self.config["auto"].get(bool):
            self.register_listener("import_begin", self._check_model)
            self.register_listener("import_task_files", self.import_task_files)
        # beets refuses a plugin's listener while another of its listeners runs, and the
        # import hook writes files: the `write` listener belongs to a plugin of its own.
        BeetsPlugin("samplecnn_files").register_listener("write", drop_absent_labels)

    # -- beets integration ---------------------------------------------------------------
    def _register_field(self) -> None:
        # beets may build the plugin more than once in a process (tests, a reloaded
        # config); MediaFile refuses a second field of the same name.
        existing = mediafile.MediaFile.__dict__.get(LABELS_FIELD)
        if existing is None:
            self.add_media_field(LABELS_FIELD, labels_media_field())
        elif getattr(existing, "samplecnn", False):
            Item._media_fields.add(LABELS_FIELD)
        else:
            raise ui.UserError(f"samplecnn: another plugin already defines the media field {LABELS_FIELD}")

    @property
    def item_types(self) -> dict:
        out = {LABELS_FIELD: _LABELS, MODEL_FIELD: dbtypes.STRING}
        out.update({name: _SCORE for name in self._recorded_fields()})
        return out

    def _fields_path(self) -> str:
        return os.path.join(beets_config.config_dir(), FIELDS_FILE)

    def _recorded_fields(self) -> list[str]:
        try:
            with open(self._fields_path(), encoding="utf-8") as f:
                names = json.load(f).get("fields", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [n for n in names if isinstance(n, str)]

    def _record_fields(self, names) -> None:
        from samplecnn.atomic import write_json
        from samplecnn.locks import exclusive

        # beets computed the field types when it opened the library: this process types
        # the new fields too (later ones read them from the list).
        Item._types.update({name: _SCORE for name in names})
        known = set(self._recorded_fields())
        if set(names) <= known:
            return
        path = self._fields_path()
        with exclusive(path, "samplecnn field list", timeout=30):
            known = set(self._recorded_fields())
            write_json(path, {"fields": sorted(known | set(names))})

    # -- settings ------------------------------------------------------------------------
    def _model_spec(self) -> str:
        raw = self.config["model"].get()
        if raw is None or not str(raw).strip():
            raise ui.UserError("samplecnn: set samplecnn.model in the beets config: a checkpoint, "
                               "an ONNX file or public weights' name (`samplecnn pretrained list`)")
        raw = str(raw)
        as_file = self.config["model"].as_filename()  # relative to the config file's folder
        if os.path.exists(as_file) or os.sep in raw or raw.lower().endswith(_MODEL_SUFFIXES):
            return as_file
        return raw

    def engine(self) -> LibraryTagger:
        """The model, resolved once per plugin instance and loaded on first use."""
        if self._engine is None:
            try:
                self._engine = LibraryTagger(
                    self._model_spec(),
                    threshold=self.config["threshold"].get(),
                    at_least_one=self.config["at_least_one"].get(bool),
                    batch_size=self.config["batch_size"].get(),
                    workers=self.config["workers"].get(),
                    device=self.config["device"].as_str(),
                )
                self._engine.check()
            except ValueError as err:
                raise ui.UserError(f"samplecnn: {err}") from None
        return self._engine

    def _genres(self) -> dict[str, str] | None:
        try:
            return genre_map(self.config["genres"].get())
        except ValueError as err:
            raise ui.UserError(f"samplecnn: {err}") from None

    def _check_model(self, *args, **kwargs) -> None:
        """`import_begin` with `auto`: a bad setting or model stops the import before the
        first file is copied, not in the middle of it."""
        self._genres()
        try:
            self.engine().tagger
        except ValueError as err:
            raise ui.UserError(f"samplecnn: {err}") from None

    def _write(self, flag: bool | None) -> bool:
        """-w/-W, else samplecnn.write, else beets' import.write."""
        if flag is not None:
            return flag
        setting = self.config["write"].get()
        return ui.should_write(None if setting is None else bool(setting))

    # -- the command and the import hook -----------------------------------------------
    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("samplecnn", help="tag items with a SampleCNN model (labels, scores, genres)")
        cmd.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="re-tag items that already have results")
        cmd.parser.add_option("-w", "--write", dest="write", action="store_true", default=None,
                              help="write SAMPLECNN_TAGS into the files (default: import.write)")
        cmd.parser.add_option("-W", "--nowrite", dest="write", action="store_false",
                              help="store results in the library only")
        cmd.func = self._command
        return [cmd]

    def _command(self, lib, opts, args) -> None:
        force = bool(opts.force) or self.config["force"].get(bool)
        items = list(lib.items(args))
        done = self.tag_items(items, write=self._write(opts.write), force=force,
                              progress=sys.stderr.isatty())
        if done.failed:
            raise ui.UserError(f"samplecnn: {done.failed} of {done.todo} item(s) failed (see above)")

    def import_task_files(self, session, task) -> None:
        """After the files are copied or moved: the library's files get the tags, never
        the originals a copy import leaves alone. beets writes no tags on an as-is
        import, so they are written here whenever writing is on."""
        self.tag_items(task.imported_items(), write=self._write(None),
                       force=self.config["force"].get(bool), progress=False)

    # -- tagging -----------------------------------------------------------------------
    def tag_items(self, items, *, write: bool, force: bool, progress: bool) -> "Outcome":
        """Tag `items` (those without results, or all with `force`), storing each as its
        file finishes: an interrupted run keeps what it stored and the next one goes on
        with the rest. A missing or unreadable file is logged by path and skipped."""
        todo = [it for it in items if force or not it.get(MODEL_FIELD)]
        out = Outcome(len(todo))
        if len(todo) < len(items):
            self._log.info("{} item(s) already tagged (-f to tag them again)", len(items) - len(todo))
        if not todo:
            return out
        engine = self.engine()
        genres = self._genres()
        scores = self.config["scores"].get(bool)
        try:
            tags = engine.tags  # loads the model: once per plugin instance
            fields = score_fields(tags) if scores else {}
            identity = engine.identity
            if fields:
                self._record_fields(fields.values())
        except ValueError as err:
            raise ui.UserError(f"samplecnn: {err}") from None
        self._log.info("tagging {} item(s) with {}", len(todo), identity)
        paths = [os.fsdecode(it.path) for it in todo]
        # beets' threaded importer calls from its own threads: forking decoding workers
        # from a multi-threaded process can deadlock them, so the thread decodes itself.
        workers = None if threading.current_thread() is threading.main_thread() else 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="item", desc="samplecnn", leave=False, file=sys.stderr)
        try:
            for index, record in engine.tag(paths, workers=workers):
                item = todo[index]
                shown = displayable_path(item.path)
                for warning in record.get("warnings") or []:
                    self._log.warning("{}: {}", shown, warning)
                if record.get("error") is not None:
                    self._log.error("{}: {}", shown, record["error"])
                    out.failed += 1
                else:
                    self._apply(item, record, identity, fields, genres, force)
                    with interrupts_deferred():
                        item.try_sync(write, False)
                    out.tagged += 1
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            self._log.warning("interrupted: {} item(s) stored; run again to tag the other {}",
                              out.tagged, out.todo - out.tagged - out.failed)
            raise
        finally:
            if bar is not None:
                bar.close()
        self._log.info("tagged {} item(s){}", out.tagged, f", {out.failed} failed" if out.failed else "")
        return out

    def _apply(self, item, record: dict, identity: str, fields: dict, genres, force: bool) -> None:
        labels = record.get("labels")
        if labels is None:  # LibraryTagger refuses such a model; a record must decide
            raise ui.UserError(f"samplecnn: {identity} decided no labels for {displayable_path(item.path)}")
        item[LABELS_FIELD] = list(labels)
        item[MODEL_FIELD] = identity
        for tag, name in fields.items():
            item[name] = float(record["tags"][tag])
        if genres is not None:
            merged = merge_genres(item.get("genres"), genres_for(labels, genres), replace=force)
            if merged != list(item.get("genres") or []):
                item["genres"] = merged


class Outcome:
    """What `tag_items` did: `todo` items to tag, `tagged`, `failed`."""

    def __init__(self, todo: int) -> None:
        self.todo, self.tagged, self.failed = todo, 0, 0
