"""ONNX export: agreement with PyTorch, dynamic batch, metadata, the onnx tagging backend."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from samplecnn.checkpoint import save_checkpoint
from samplecnn.cli import main
from samplecnn.export import export_onnx
from samplecnn.inference.onnx import read_metadata
from samplecnn.inference.runners import OrtRunner
from samplecnn.models import create_model
from samplecnn.tagging import Tagger

TAGS = ["a", "b", "c"]


@pytest.mark.parametrize("name", ["samplecnn_small", "melcnn_small", "framecnn_small"])
def test_onnx_agrees_with_torch_for_any_batch(tmp_path, name):
    model = create_model(name, width=0.125, tags=TAGS, seed=0).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that folding errors would show
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    rep = export_onnx(model, tmp_path / "m.onnx")
    assert rep.max_abs_diff_logits <= 1e-4 and rep.max_abs_diff_scores <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "audio"
    assert sess.get_inputs()[0].shape[1] == model.config.input_samples
    rng = np.random.default_rng(5)
    for batch in (1, 7):
        x = (0.5 * rng.standard_normal((batch, model.config.input_samples))).astype(np.float32)
        logits, scores = sess.run(["logits", "scores"], {"audio": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x).unsqueeze(1)).numpy()
        assert logits.shape == (batch, len(TAGS))
        np.testing.assert_allclose(logits, ref, atol=1e-4)
        np.testing.assert_allclose(scores, 1 / (1 + np.exp(-ref)), atol=1e-4)


def test_metadata_carries_tags_rate_and_config(tmp_path):
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0, sample_rate=22050)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 0
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["tags"] == TAGS and meta["sample_rate"] == 22050
    assert meta["input_samples"] == model.config.input_samples
    assert meta["model_config"] == json.loads(json.dumps(model.config.to_dict()))
    props = {p.key for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert "samplecnn.input" in props
    # No temporary file left behind (the lock file of samplecnn.locks stays, by design).
    assert [p.name for p in tmp_path.glob(".m.onnx.*")] == [".m.onnx.lock"]


def test_onnx_backend_tags_like_torch(tmp_path):
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=3)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    export_onnx(ckpt, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "x.wav", (0.3 * rng.standard_normal(50000)).astype(np.float32), 44100)
    out_t, out_o = tmp_path / "t.json", tmp_path / "o.json"
    assert main(["tag", str(ckpt), str(tmp_path / "x.wav"), "-o", str(out_t), "--workers", "0"]) == 0
    assert main(["tag", str(tmp_path / "m.onnx"), str(tmp_path / "x.wav"), "-o", str(out_o),
                 "--backend", "onnx", "--workers", "0"]) == 0
    rt, ro = json.loads(out_t.read_text())[0], json.loads(out_o.read_text())[0]
    assert ro["tags"] == pytest.approx(rt["tags"], abs=1e-4)
    assert ro["segments"] == rt["segments"] and ro["sample_rate"] == rt["sample_rate"]
    with pytest.raises(ValueError, match=r"m\.onnx: an ONNX export holds the embeddings of layer features only"):
        Tagger.from_onnx(tmp_path / "m.onnx").embed(tmp_path / "x.wav", layer="block2")


def test_foreign_onnx_file_is_refused(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="not a samplecnn ONNX export"):
        Tagger.from_onnx(tmp_path / "other.onnx")


def _without_feature_outputs(path):
    """The file as `samplecnn export` wrote it before the scores graph output `features`:
    the same graph less the `features.*` outputs and the nodes that only made them."""
    proto = onnx.load(str(path))
    gone = [o for o in proto.graph.output if o.name.startswith("features.")]
    for o in gone:
        proto.graph.output.remove(o)
    for node in [n for n in proto.graph.node if set(n.output) <= {o.name for o in gone}]:
        proto.graph.node.remove(node)
    onnx.save(proto, str(path))


@pytest.mark.parametrize("name,kw", [("samplecnn_small", {}), ("leenet11", {"input_samples": 16000})])
def test_export_embeds_features_like_the_checkpoint(tmp_path, name, kw, capsys):
    model = create_model(name, width=0.125, tags=TAGS, seed=2, **kw).eval()
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--onnx", str(onnx_path)]) == 0
    meta = read_metadata(onnx_path)
    assert meta["outputs"] == ["logits", "scores", "features.mean", "features.max"]
    assert meta["layer_names"] == ["features"]
    runner = OrtRunner.from_file(onnx_path)
    rng = np.random.default_rng(1)
    # A whole-clip model (LeeNet) takes any length: a window shorter than its training one.
    n = model.config.input_samples // 2 if model.config.whole_clip else model.config.input_samples
    x = (0.3 * rng.standard_normal((3, n))).astype(np.float32)
    with torch.no_grad():
        for pool in ("mean", "max"):
            want = model.embed(torch.from_numpy(x).unsqueeze(1), "features", pool).numpy()
            got = runner.embed(x, "features", pool)
            assert got.shape == want.shape == (3, model.layer_width("features"))
            np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(runner.logits(x), model(torch.from_numpy(x).unsqueeze(1)).numpy(), atol=1e-4)

    # The CLI writes the same .npz from the export as from the checkpoint.
    sf.write(tmp_path / "x.wav", (0.3 * rng.standard_normal(40000)).astype(np.float32), 22050)
    out_c, out_o = tmp_path / "c.npz", tmp_path / "o.npz"
    for src, out in ((ckpt, out_c), (onnx_path, out_o)):
        assert main(["embed", str(src), str(tmp_path / "x.wav"), "-o", str(out), "--workers", "0"]) == 0
    with np.load(out_c) as c, np.load(out_o) as o:
        assert o["window_embeddings"].shape == c["window_embeddings"].shape
        np.testing.assert_allclose(o["window_embeddings"], c["window_embeddings"], atol=1e-4)
        np.testing.assert_allclose(o["file_embeddings"], c["file_embeddings"], atol=1e-4)
        for key in ("window_start_s", "window_end_s", "layer", "pool", "ok"):
            np.testing.assert_array_equal(o[key], c[key])

    # Another layer is a one-line error naming the file and what it has; nothing is written.
    capsys.readouterr()
    assert main(["embed", str(onnx_path), str(tmp_path / "x.wav"), "-o", str(tmp_path / "b.npz"),
                 "--layer", "block1", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(onnx_path) in err and "layer features only, not 'block1'" in err
    assert not (tmp_path / "b.npz").exists()


def test_older_export_without_feature_outputs_still_tags(tmp_path):
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=4).eval()
    export_onnx(model, tmp_path / "m.onnx")
    _without_feature_outputs(tmp_path / "m.onnx")
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["outputs"] == ["logits", "scores"] and meta["layer_names"] == []
    runner = OrtRunner.from_file(tmp_path / "m.onnx")
    x = (0.3 * np.random.default_rng(0).standard_normal((2, model.config.input_samples))).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(runner.logits(x), model(torch.from_numpy(x).unsqueeze(1)).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match=r"m\.onnx: this ONNX export has no embedding outputs"):
        runner.embed(x)
