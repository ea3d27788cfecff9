"""Issue 19: option values checked where they are parsed (item 4), and the smaller gaps
(items 5, 11, 12): each at the level a user meets it (CLI exit 2 and one line, the
Python API's ValueError)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf

from samplecnn.cli import main
from samplecnn.tagging import Tagger
from samplecnn.windows import WindowGrid
from samplecnn.testing.datasets import write_tiny_checkpoint

TAGS = ["rock", "piano", "quiet"]
SR = 16000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=3)


@pytest.fixture(scope="module")
def tagger(ckpt):
    return Tagger.from_checkpoint(ckpt, batch_size=4)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("music") / "a.wav"
    sf.write(path, (0.3 * np.random.default_rng(1).standard_normal(SR // 2)).astype(np.float32), SR)
    return str(path)


def _usage_error(capsys, argv, *needles):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "error:" in err[0] and "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], err
    return err[0]


# -- 4: non-finite and huge floats ------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-inf", "0", "-1", "abc"])
def test_hop_is_checked_by_every_command(ckpt, wav, tmp_path, capsys, value):
    for argv in (["tag", ckpt, wav], ["embed", ckpt, wav, "--out", str(tmp_path / "e.npz")],
                 ["evaluate", ckpt, "--data", str(tmp_path)]):
        line = _usage_error(capsys, argv + ["--hop", value], "--hop")
        assert line.startswith(f"samplecnn {argv[0]}: error:")


@pytest.mark.parametrize("argv", [
    ["serve", "m.ckpt", "--max-upload-mb", "nan"],
    ["serve", "m.ckpt", "--max-upload-mb", "inf"],
    ["serve", "m.ckpt", "--max-wait-ms", "nan"],
    ["serve", "m.ckpt", "--timeout", "inf"],
    ["serve", "m.ckpt", "--timeout", "0"],
    ["tag", "m.ckpt", "a.wav", "--engine", "ray", "--gpus-per-worker", "nan"],
    ["export", "m.ckpt", "--onnx", "m.onnx", "--atol", "nan"],
    ["synth", "out", "--seconds", "inf"],
    ["demo", "--out", "out", "--seconds", "nan"],
    ["visualize", "filters", "m.ckpt", "--out", "o", "--step-size", "inf"],
    ["import", "w.pth", "--out", "m.ckpt", "--bn-eps", "nan"],
    ["prepare", "csv", "--root", "r", "--out", "o", "--valid-fraction", "nan"],
    ["prepare", "msd", "--root", "r", "--out", "o", "--threshold", "inf"],
])
def test_every_float_option_is_finite_and_bounded(capsys, argv):
    _usage_error(capsys, argv, argv[-2])


def test_api_refuses_non_finite_hops(tagger):
    x = np.zeros(SR, np.float32)
    for hop in (math.inf, math.nan, 1e308, -1.0):
        with pytest.raises(ValueError, match="hop"):
            WindowGrid.of_seconds(4096, SR, hop)
        with pytest.raises(ValueError, match="hop"):
            tagger.tag(x, sample_rate=SR, hop=hop)
    assert WindowGrid.of_seconds(4096, SR, 0.5).hop == SR // 2


def test_service_settings_are_finite():
    from samplecnn.service.app import create_app

    for kw in ({"max_upload_mb": math.nan}, {"max_wait_ms": math.nan}, {"timeout_s": math.inf}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            create_app(object(), **kw)


# -- 5: an unusable SAMPLECNN_HOME ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["under_a_file", "proc", "sys"])
def test_unusable_home_warns_once_for_scoring_and_is_one_line_for_downloads(
        ckpt, wav, tmp_path, kind, monkeypatch, capsys):
    from samplecnn.inference import onnx

    if kind == "under_a_file":
        (tmp_path / "file").write_text("x")
        home = tmp_path / "file" / "home"
    else:
        home = f"/{kind}/samplecnn-home"
    monkeypatch.setenv("SAMPLECNN_HOME", str(home))
    monkeypatch.setattr(onnx, "_cache_warned", False)
    for _ in range(2):  # warned once per process, scored every time
        assert main(["tag", ckpt, wav, "--workers", "0", "--backend", "onnxruntime", "--threshold", "0.5"]) == 0
    out = capsys.readouterr()
    warn = out.err.strip().splitlines()
    assert len(warn) == 1 and warn[0].startswith("samplecnn: warning:"), warn
    assert f"SAMPLECNN_HOME={home}" in warn[0]
    assert out.out.count('"error": null') == 2  # both runs scored the file
    assert main(["pretrained", "download", "sota-mtat-sample"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"SAMPLECNN_HOME={home}" in lines[0], lines


# -- 12: small ones ---------------------------------------------------------------------------

def test_big_endian_pcm_is_read_byte_swapped(tagger):
    x = (0.3 * np.random.default_rng(2).standard_normal(SR)).clip(-1, 1)
    pcm = (x * 32767).astype("<i2")
    want = tagger.tag(pcm, sample_rate=SR)["tags"]
    for arr in (pcm.astype(">i2"), (pcm.astype("<i4") << 16).astype(">i4"),
                (pcm / 32768.0).astype(">f4"), (pcm / 32768.0).astype(">f8")):
        got = tagger.tag(arr, sample_rate=SR)["tags"]
        assert got == pytest.approx(want, abs=1e-5), arr.dtype


@pytest.mark.parametrize("rate", ["16000", 16000.0, 1, 999, 10**7, True, None])
def test_array_sample_rate_is_an_int_in_the_header_range(tagger, rate):
    x = np.zeros(SR, np.float32)
    with pytest.raises(ValueError, match="sample_rate"):
        tagger.tag(x, sample_rate=rate)
    assert tagger.tag(x, sample_rate=np.int64(22050))["error"] is None


def _manifest(tmp_path, rows):
    path = tmp_path / "m.csv"
    path.write_text("path\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


def test_blank_manifest_row_is_one_reason_on_every_engine(ckpt, wav, tmp_path, capsys):
    import json

    from samplecnn.tagging.ray_engine import _decode_row
    from samplecnn.tagging.sources import EMPTY_PATH

    man = _manifest(tmp_path, [wav, '""'])
    out = tmp_path / "o.jsonl"
    assert main(["tag", ckpt, "--manifest", man, "--format", "jsonl", "-o", str(out), "--workers", "0"]) == 1
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    blank = [r for r in recs if r["error"] is not None]
    assert len(blank) == 1 and blank[0]["path"] == "" and blank[0]["error"] == EMPTY_PATH
    assert "blank manifest row" in capsys.readouterr().err
    ray_side = _decode_row({"path": ""}, sample_rate=SR, grid=WindowGrid(4096, 4096))
    assert ray_side["error"] == EMPTY_PATH


def test_duplicate_manifest_rows_are_tagged_once(ckpt, wav, tmp_path, capsys):
    import os

    rel = os.path.relpath(wav, tmp_path)
    man = _manifest(tmp_path, [wav, rel, wav, "./" + rel])
    out = tmp_path / "o.jsonl"
    assert main(["tag", ckpt, wav, "--manifest", man, "--format", "jsonl", "-o", str(out),
                 "--workers", "0"]) == 0
    assert len(out.read_text().splitlines()) == 1
    err = capsys.readouterr().err
    assert "4 duplicate row(s)" in err and "tagged once" in err
    from samplecnn.tagging.catalog import read_manifest

    assert read_manifest(man) == [wav]


@pytest.mark.slow
def test_resumed_moved_run_names_every_path_absolutely(tmp_path, monkeypatch):
    import json
    import shutil

    import yaml

    from samplecnn.training import train
    from training_helpers import make_learnable_store, tiny_config

    store = make_learnable_store(tmp_path / "data", n_clips=12, splits=(8, 2, 2))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(store, "a", trainer={"max_epochs": 1, "limit_train_batches": 1,
                                           "limit_val_batches": 1})
    train(cfg, log=None)  # out_dir given relatively
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "b")
    train(None, ["trainer.max_epochs=2"], resume="moved/b", log=None)  # resumed relatively
    b = tmp_path / "moved" / "b"
    conf = yaml.safe_load((b / "config.yaml").read_text())
    summary = json.loads((b / "train_summary.json").read_text())
    paths = [conf["out_dir"], conf["data"]["store"], summary["out_dir"],
             summary["best_checkpoint"], summary["last_checkpoint"]]
    assert all(os.path.isabs(p) for p in paths), paths
    assert conf["out_dir"] == summary["out_dir"] == str(b)
    assert summary["best_checkpoint"] == str(b / "checkpoints" / "best.ckpt")
    assert summary["last_checkpoint"] == str(b / "checkpoints" / "last.ckpt")
