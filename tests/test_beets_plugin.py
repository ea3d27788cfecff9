"""The beets plugin (`beetsplug.samplecnn`) on real beets libraries of generated MP3 and
FLAC files, with beets' own test helpers (temporary library, config and BEETSDIR).

Over 450 lines: every scenario shares one model fixture, one audio generator and one
independent reader of the file tags, which a split would have to repeat."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("beets")
sf = pytest.importorskip("soundfile")

import mutagen  # noqa: E402
from beets.dbcore.types import Float  # noqa: E402
from beets.library import Item  # noqa: E402
from beets.test.helper import ImportHelper, PluginMixin  # noqa: E402
from beets.ui import UserError  # noqa: E402
from beets.util import cached_classproperty  # noqa: E402

from samplecnn.tagging.library import (DEFAULT_GENRES, FILE_TAG, LABELS_FIELD,  # noqa: E402
                                       MODEL_FIELD, genre_map, genres_for, merge_genres,
                                       score_fields)

SRC = Path(__file__).resolve().parents[1] / "src"
TAGS = ["rock", "jazz", "no vocals", "Hip-Hop", "classical", "guitar"]
SR = 16000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny random-weight checkpoint: plumbing, not accuracy."""
    import samplecnn
    from samplecnn.checkpoint import save_checkpoint

    model = samplecnn.create_model("samplecnn_small", n_tags=len(TAGS), seed=0, tags=TAGS)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_checkpoint(path, model)
    return path


def write_audio(path: Path, seed: int, seconds: float = 2.0) -> Path:
    """A short clip (noise bursts over a tone) in the format of `path`'s suffix."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (110 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR, format=path.suffix[1:].upper())
    return path


def file_labels(path) -> list[str] | None:
    """SAMPLECNN_TAGS read with mutagen itself, not through the plugin's field."""
    f = mutagen.File(os.fsdecode(path))
    if f.tags is None:
        return None
    if hasattr(f.tags, "getall"):  # ID3
        frames = f.tags.getall(f"TXXX:{FILE_TAG}")
        return list(frames[0].text) if frames else None
    return list(f.tags[FILE_TAG]) if FILE_TAG in f.tags else None


def decoded(path) -> np.ndarray:
    from samplecnn.audio import load_audio

    return load_audio(os.fsdecode(path), SR).samples


def digest(path) -> str:
    return hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()


class Library(PluginMixin, ImportHelper):
    plugin = "samplecnn"
    preload_plugin = False

    @pytest.fixture(autouse=True)
    def _fresh_types(self, model_path):
        # beets caches each model's field types per class; the plugin's change per test.
        cached_classproperty.cache.clear()
        self.model_path = model_path
        yield
        cached_classproperty.cache.clear()

    def configure(self, **settings) -> None:
        self.unload_plugins()
        # `set` lays a new source over the earlier ones: every option is given each time.
        self.config["samplecnn"].set({
            "model": str(self.model_path), "workers": 0, "threshold": None, "at_least_one": False,
            "auto": False, "scores": False, "genres": False, "batch_size": 16, "write": None,
            "force": False, **settings})
        self.load_plugins()
        cached_classproperty.cache.clear()

    def import_files(self, names, **import_config) -> list[Item]:
        for i, name in enumerate(names):
            write_audio(self.import_path / "album" / name, seed=i)
        self.setup_importer(autotag=False, **import_config).run()
        return list(self.lib.items())

    def samplecnn(self, *args) -> None:
        self.run_command("samplecnn", *args)


class TestTagging(Library):
    def test_a_library_with_a_broken_item_is_tagged_and_a_second_run_rewrites_nothing(self, caplog):
        """The issue's done-when scenario, with scores checked against an independent
        forward pass (the plain PyTorch model, not the ONNX graph the plugin runs)."""
        self.configure(threshold=0.5, at_least_one=True, scores=True)
        items = self.import_files(["a.mp3", "b.flac", "c.mp3", "d.flac", "e.mp3"])
        assert len(items) == 5 and {i.format for i in items} == {"MP3", "FLAC"}
        broken = items[2]
        good = [i for i in items if i.id != broken.id]
        before = {i.id: decoded(i.path) for i in good}
        Path(os.fsdecode(broken.path)).write_bytes(os.urandom(4096))

        with pytest.raises(UserError, match="1 of 5 item"):
            self.samplecnn()
        assert f"{os.fsdecode(broken.path)}: " in caplog.text
        from samplecnn.tagging import Tagger

        plain = Tagger.load(self.model_path, backend="plain")
        fields = score_fields(TAGS)
        for item in good:
            item.load()
            labels = list(item[LABELS_FIELD])
            scores = {t: item[fields[t]] for t in TAGS}
            ranked = sorted(TAGS, key=lambda t: -scores[t])
            expected = [t for t in ranked if scores[t] >= 0.5] or ranked[:1]
            assert labels == expected and labels
            assert file_labels(item.path) == labels
            assert item[MODEL_FIELD] == f"tiny.ckpt@{digest(self.model_path)[:12]}"
            ref = plain.tag(os.fsdecode(item.path))["tags"]
            assert scores == pytest.approx(ref, abs=1e-4)
            # Writing tags leaves the audio's decoded samples as they were.
            np.testing.assert_array_equal(decoded(item.path), before[item.id])
        broken.load()
        assert MODEL_FIELD not in broken and not broken.get(LABELS_FIELD)

        state = {i.id: (digest(i.path), os.stat(i.path).st_mtime_ns, dict(i)) for i in good}
        caplog.clear()
        with pytest.raises(UserError, match="1 of 1 item"):  # only the broken one is tried
            self.samplecnn()
        assert "4 item(s) already tagged" in caplog.text
        for item in good:
            item.load()
            assert (digest(item.path), os.stat(item.path).st_mtime_ns, dict(item)) == state[item.id]

    def test_a_model_decides_with_its_stored_thresholds(self, tmp_path):
        """Thresholds stored in the checkpoint (as `samplecnn train` fits them) decide
        without any `threshold` setting: here only jazz can pass (0 against 1 for the
        others), so every item is labelled jazz and nothing else."""
        import samplecnn
        from samplecnn.checkpoint import save_checkpoint
        from samplecnn.thresholds import Thresholds

        model = samplecnn.create_model("samplecnn_small", n_tags=len(TAGS), seed=0, tags=TAGS)
        model.thresholds = Thresholds(np.array([0.0 if t == "jazz" else 1.0 for t in TAGS]), TAGS)
        fitted = tmp_path / "fitted.ckpt"
        save_checkpoint(fitted, model)
        self.configure(model=str(fitted))
        items = self.import_files(["a.mp3", "b.flac"])
        self.samplecnn()
        for item in items:
            item.load()
            assert list(item[LABELS_FIELD]) == ["jazz"] and file_labels(item.path) == ["jazz"]
            assert item[MODEL_FIELD].startswith("fitted.ckpt@")

    def test_labels_are_written_only_with_write_on(self):
        self.configure(threshold=0.001)
        items = self.import_files(["a.mp3", "b.flac"])
        self.samplecnn("-W")
        for item in items:
            item.load()
            assert sorted(item[LABELS_FIELD]) == sorted(TAGS)
            assert file_labels(item.path) is None
        self.samplecnn("-f", "-w", "format:FLAC")
        flac, mp3 = sorted(items, key=lambda i: i.format)
        assert sorted(file_labels(flac.path)) == sorted(TAGS)
        assert file_labels(mp3.path) is None

    def test_write_follows_the_setting_then_import_write_and_the_flags_win(self):
        self.configure(threshold=0.001, write=False)
        (item,) = self.import_files(["a.flac"])
        self.samplecnn()
        assert file_labels(item.path) is None
        self.configure(threshold=0.001)  # write: unset -> beets' import.write
        self.config["import"]["write"] = False
        self.samplecnn("-f")
        assert file_labels(item.path) is None
        self.config["import"]["write"] = True
        self.samplecnn("-f")
        assert sorted(file_labels(item.path)) == sorted(TAGS)

    def test_undo_with_beet_modify_removes_the_field_and_the_file_tag(self):
        self.configure(threshold=0.001)
        (item,) = self.import_files(["a.flac"])
        self.samplecnn()
        assert file_labels(item.path)
        self.run_command("modify", "--yes", f"{LABELS_FIELD}!", f"{MODEL_FIELD}!")
        item.load()
        assert LABELS_FIELD not in item and MODEL_FIELD not in item
        assert file_labels(item.path) is None

    def test_force_retags_and_replaces_genres_which_are_otherwise_appended(self):
        self.configure(threshold=0.5, at_least_one=True, genres=True)
        (item,) = self.import_files(["a.mp3"])
        item.genres = ["Ambient"]
        item.store()
        self.samplecnn()
        item.load()
        first = list(item[LABELS_FIELD])
        mapped = genres_for(first, genre_map(True))
        assert item.genres == ["Ambient"] + [g for g in mapped if g != "Ambient"]
        # Another threshold without -f: the item keeps its results.
        self.configure(threshold=0.001, genres=True)
        self.samplecnn()
        item.load()
        assert list(item[LABELS_FIELD]) == first
        # With -f: every tag passes, and the genres are the mapped ones only.
        self.samplecnn("-f")
        item.load()
        assert sorted(item[LABELS_FIELD]) == sorted(TAGS)
        assert sorted(item.genres) == ["Classical", "Hip-Hop", "Jazz", "Rock"]
        assert item.genres == genres_for(item[LABELS_FIELD], genre_map(True))
        assert mutagen.File(os.fsdecode(item.path)).tags.getall("TCON")[0].text == item.genres

    def test_a_user_genre_map_extends_the_default_one(self):
        self.configure(threshold=0.001, genres={"guitar": "Guitar Music", "rock": None})
        (item,) = self.import_files(["a.flac"])
        self.samplecnn()
        item.load()
        assert sorted(item.genres) == ["Classical", "Guitar Music", "Hip-Hop", "Jazz"]

    def test_score_fields_are_typed_and_queryable(self):
        self.configure(threshold=0.5, scores=True)
        items = self.import_files(["a.mp3", "b.flac", "c.mp3"])
        self.samplecnn()
        recorded = json.loads((self.temp_path / "samplecnn_fields.json").read_text())["fields"]
        assert sorted(recorded) == sorted(score_fields(TAGS).values())
        self.configure(threshold=0.5)  # a new beets run: types come from the recorded list
        assert isinstance(Item._types["samplecnn_hip_hop"], Float)
        values = {i.id: self.lib.get_item(i.id)["samplecnn_rock"] for i in items}
        cut = sorted(values.values())[1]
        hits = {i.id for i in self.lib.items(f"samplecnn_rock:{cut}..")}
        assert hits == {k for k, v in values.items() if v >= cut} and 0 < len(hits) < 3

    def test_an_interrupted_run_keeps_what_it_stored_and_the_next_run_goes_on(self, monkeypatch):
        import multiprocessing

        self.configure(threshold=0.001, workers=1)  # with a decoding process, as by default
        items = self.import_files(["a.mp3", "b.flac", "c.mp3", "d.flac"])
        writes, interrupted = [], []
        real_write = Item.write

        def write(item, *args, **kwargs):
            writes.append(item.id)
            if len(writes) == 2 and not interrupted:  # Ctrl-C during the second file's write
                interrupted.append(True)
                os.kill(os.getpid(), signal.SIGINT)
            return real_write(item, *args, **kwargs)

        monkeypatch.setattr(Item, "write", write)
        with pytest.raises(KeyboardInterrupt):
            self.samplecnn()
        assert not multiprocessing.active_children()  # the decoding worker is gone
        stored = {i.id for i in self.lib.items() if i.get(MODEL_FIELD)}
        assert stored == set(writes[:2])  # the interrupted write finished, with its row
        for i in self.lib.items():
            assert (file_labels(i.path) is not None) == (i.id in stored)
        writes.clear()
        self.samplecnn()
        assert sorted(writes) == sorted({i.id for i in items} - stored)
        assert all(i.get(MODEL_FIELD) for i in self.lib.items())

    def test_a_missing_file_and_a_bad_config_are_one_line_errors(self, caplog):
        self.configure(threshold=0.001)
        items = self.import_files(["a.mp3", "b.flac"])
        os.remove(os.fsdecode(items[0].path))
        with pytest.raises(UserError, match="1 of 2"):
            self.samplecnn()
        assert f"{os.fsdecode(items[0].path)}: file not found" in caplog.text
        assert self.lib.get_item(items[1].id)[LABELS_FIELD]
        self.configure(model=str(self.temp_path / "nope.ckpt"))
        with pytest.raises(UserError, match="nope.ckpt: model file not found"):
            self.samplecnn("-f")
        self.configure(threshold=None)
        with pytest.raises(UserError, match="carries no thresholds"):
            self.samplecnn("-f")
        self.configure(model="no-such-weights")
        with pytest.raises(UserError, match="unknown pretrained weights 'no-such-weights'"):
            self.samplecnn("-f")
        junk = self.temp_path / "junk.ckpt"
        junk.write_bytes(os.urandom(2000))
        self.configure(model=str(junk), threshold=0.5)
        with pytest.raises(UserError, match="junk.ckpt") as err:
            self.samplecnn("-f")
        assert "\n" not in str(err.value)
        for setting, message in [({"threshold": 2}, "threshold must be at most 1"),
                                 ({"batch_size": 0}, "batch_size must be at least 1"),
                                 ({"genres": "rock"}, "genres must be yes, no or a map")]:
            self.configure(**{"threshold": 0.5, **setting})
            with pytest.raises(UserError, match=message):
                self.samplecnn("-f")
        assert self.lib.get_item(items[1].id)[LABELS_FIELD]  # no error touched the item

    def test_a_second_plugin_instance_reuses_the_media_field(self):
        self.configure(threshold=0.001)
        from beetsplug.samplecnn import SampleCNNPlugin

        field = __import__("mediafile").MediaFile.__dict__[LABELS_FIELD]
        SampleCNNPlugin()
        assert __import__("mediafile").MediaFile.__dict__[LABELS_FIELD] is field
        assert LABELS_FIELD in Item._media_fields


class TestImport(Library):
    db_on_disk = True  # the threaded importer opens a connection per thread
    def test_auto_tags_the_library_copy_not_the_original(self, monkeypatch):
        from samplecnn.tagging.tagger import Tagger

        loads = []
        real_load = Tagger.load.__func__

        def load(cls, *args, **kwargs):
            loads.append(args)
            return real_load(cls, *args, **kwargs)

        monkeypatch.setattr(Tagger, "load", classmethod(load))
        self.configure(threshold=0.001, auto=True)
        originals = [write_audio(self.import_path / album / n, seed=i)
                     for i, (album, n) in enumerate([("one", "a.mp3"), ("one", "b.flac"), ("two", "c.mp3")])]
        before = [digest(p) for p in originals]
        self.config["threaded"] = True  # beets' default: the hook runs in a pipeline thread
        self.setup_importer(autotag=False, copy=True, write=True).run()
        assert len(loads) == 1  # one model load for the two albums (two import tasks)
        items = list(self.lib.items())
        assert len(items) == 3
        for item in items:
            assert str(self.lib_path) in os.fsdecode(item.path)
            assert sorted(item[LABELS_FIELD]) == sorted(TAGS)
            assert sorted(file_labels(item.path)) == sorted(TAGS)
        assert [digest(p) for p in originals] == before
        assert all(file_labels(p) is None for p in originals)

    def test_a_model_without_thresholds_stops_the_import_before_any_file_is_copied(self):
        self.configure(auto=True)
        write_audio(self.import_path / "album" / "a.flac", seed=0)
        with pytest.raises(UserError, match="carries no thresholds"):
            self.setup_importer(autotag=False, copy=True).run()
        assert not list(self.lib.items()) and not any(self.lib_path.rglob("*.flac"))

    def test_auto_stores_without_writing_when_import_write_is_off(self):
        self.configure(threshold=0.001, auto=True)
        write_audio(self.import_path / "album" / "a.flac", seed=0)
        self.setup_importer(autotag=False, copy=True, write=False).run()
        (item,) = self.lib.items()
        assert sorted(item[LABELS_FIELD]) == sorted(TAGS)
        assert file_labels(item.path) is None


# -- without a library ----------------------------------------------------------------


def test_beet_ls_with_the_plugin_imports_neither_torch_nor_onnxruntime(tmp_path, model_path):
    (tmp_path / "config.yaml").write_text(
        f"directory: {tmp_path / 'music'}\nlibrary: {tmp_path / 'lib.db'}\nplugins: samplecnn\n"
        f"create_backup_before_migrations: no\nsamplecnn:\n  model: {model_path}\n  auto: yes\n"
        "  threshold: 0.5\n", "utf-8")
    code = ("import sys\nfrom beets.ui import main\n"
            "for cmd in (['ls'], ['ls', 'samplecnn_rock:0.5..'], ['samplecnn', '--help']):\n"
            "    try:\n        main(cmd)\n    except SystemExit:\n        pass\n"
            "heavy = ('torch', 'onnxruntime', 'onnx', 'lightning')\n"
            "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n")
    env = {**os.environ, "BEETSDIR": str(tmp_path), "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "-f, --force" in out.stdout and "-W, --nowrite" in out.stdout
    assert "error loading plugin" not in out.stderr
    assert not list(tmp_path.glob("*.bak")) and not list(tmp_path.glob("lib.db.*"))


def test_score_fields_are_safe_and_unique():
    fields = score_fields(["rock", "Rock", "no vocals", "Hip-Hop", "labels", "model", "80s",
                           "Électro", "---", "mood/theme---happy"])
    assert list(fields.values()) == [
        "samplecnn_rock", "samplecnn_rock_2", "samplecnn_no_vocals", "samplecnn_hip_hop",
        "samplecnn_labels_2", "samplecnn_model_2", "samplecnn_80s", "samplecnn_electro",
        "samplecnn_tag8", "samplecnn_mood_theme_happy"]


def test_the_default_genre_map_names_tags_of_the_mtat_and_msd_sets():
    from samplecnn.data.msd import MSD_TOP50
    from samplecnn.data.mtat import MTAT_TOP50

    known = {t.casefold() for t in MTAT_TOP50 + MSD_TOP50}
    assert set(DEFAULT_GENRES) <= known
    assert genres_for(["Hip-Hop", "guitar", "rock", "classic rock", "ROCK"], genre_map(True)) == [
        "Hip-Hop", "Rock", "Classic Rock"]


def test_genres_append_unless_replaced_and_bad_maps_are_refused():
    assert merge_genres(["Rock", None], ["rock", "Jazz"], replace=False) == ["Rock", "Jazz"]
    assert merge_genres(["Rock"], ["Jazz"], replace=True) == ["Jazz"]
    assert merge_genres(["Rock"], [], replace=True) == ["Rock"]
    assert genre_map(False) is None and genre_map(None) is None
    with pytest.raises(ValueError, match="genres must be"):
        genre_map("rock")
    with pytest.raises(ValueError, match="the genre of 'rock' must be text"):
        genre_map({"rock": 3})


def test_the_package_installs_the_plugin_into_the_beetsplug_namespace():
    import tomllib

    from setuptools import find_namespace_packages

    repo = SRC.parent
    meta = tomllib.loads((repo / "pyproject.toml").read_text("utf-8"))
    find = meta["tool"]["setuptools"]["packages"]["find"]
    packages = find_namespace_packages(where=find["where"][0], include=find["include"])
    assert "beetsplug" in packages and "samplecnn.tagging" in packages
    assert not (SRC / "beetsplug" / "__init__.py").exists()  # beets' namespace (PEP 420)
    extras = meta["project"]["optional-dependencies"]
    assert "beets>=2.7,<3" in extras["beets"] and "beets>=2.7,<3" in extras["test"]


def test_the_engine_half_tags_with_an_onnx_export_as_with_its_checkpoint(tmp_path, model_path):
    from samplecnn.checkpoint import load_model
    from samplecnn.inference.onnx import cached_graph
    from samplecnn.tagging.library import LibraryTagger

    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(cached_graph(load_model(model_path)).read_bytes())
    paths = [str(write_audio(tmp_path / n, seed=i)) for i, n in enumerate(["a.mp3", "b.flac"])]
    paths.append(str(tmp_path / "missing.flac"))
    by_ckpt = dict(LibraryTagger(model_path, threshold=0.001, workers=0).tag(paths))
    engine = LibraryTagger(onnx, threshold=0.001, workers=0)
    by_onnx = dict(engine.tag(paths))
    for i in (0, 1):
        assert by_onnx[i]["tags"] == pytest.approx(by_ckpt[i]["tags"], abs=1e-5)
        assert sorted(by_onnx[i]["labels"]) == sorted(TAGS)
    assert by_onnx[2]["error"] == "file not found" and by_onnx[2]["labels"] is None
    assert engine.identity == f"tiny.onnx@{digest(onnx)[:12]}"


def test_public_weights_are_named_not_downloaded_until_used():
    from samplecnn.tagging.library import LibraryTagger

    engine = LibraryTagger("sota-mtat-sample")
    assert engine.pretrained and engine.name == "sota-mtat-sample"
    engine.check()  # a known name: nothing is fetched
    assert engine._path is None
    with pytest.raises(ValueError, match="model file not found"):
        LibraryTagger("models/best.ckpt").check()
    with pytest.raises(ValueError, match="no model"):
        LibraryTagger("  ")
