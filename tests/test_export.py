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
    with pytest.raises(ValueError, match="PyTorch checkpoint"):
        Tagger.from_onnx(tmp_path / "m.onnx").embed(tmp_path / "x.wav")


def test_foreign_onnx_file_is_refused(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="not a samplecnn ONNX export"):
        Tagger.from_onnx(tmp_path / "other.onnx")
