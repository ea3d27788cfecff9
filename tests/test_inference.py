"""Inference: every registered variant, every runner, the ONNX export and the fused twin
give the plain model's outputs; fusion is per block and refuses what it does not know.

No timings are asserted; speed lives in benchmarks/ and BENCHMARKS.md.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from samplecnn.inference import onnx as inf_onnx
from samplecnn.inference.runners import (OrtRunner, TorchRunner, check_device, load_runner,
                                         optimize_for_inference)
from samplecnn.models import create_model, fused, list_models


def _model(name: str, seed: int = 0, width: float = 0.125) -> nn.Module:
    """A narrow eval model whose BatchNorms have non-trivial statistics (fresh ones are
    the identity, which would hide folding mistakes)."""
    m = create_model(name, seed=seed, width=width, tags=[f"t{i}" for i in range(7)]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m


def _close(a, b, rtol: float = 1e-4) -> None:
    # Relative to the output's scale: folding and other kernels reorder float sums.
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rtol * (np.abs(b).max() + 1e-6)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_variant_on_every_runner(name):
    m = _model(name)
    # A whole-clip model (LeeNet, 10 s windows) takes any length: a short odd one.
    n = 4001 if m.config.whole_clip else m.input_samples
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (2, n)).astype(np.float32)
    with torch.inference_mode():
        ref = m(torch.from_numpy(x)).numpy()
        ref_emb = {(layer, pool): m.embed(torch.from_numpy(x), layer, pool).numpy()
                   for layer in m.layer_names for pool in ("mean", "max")}
    assert np.isfinite(ref).all()
    for backend in ("plain", "torch", "onnxruntime"):
        runner = optimize_for_inference(m, backend)
        assert runner.tags == m.config.tags and runner.layer_names == m.layer_names
        _close(runner.logits(x), ref)
        for (layer, pool), want in ref_emb.items():
            _close(runner.embed(x, layer, pool), want)


def test_onnx_file_export_equals_plain_model_and_carries_metadata(tmp_path):
    from samplecnn.export import export_onnx
    from samplecnn.inference.onnx import read_metadata

    m = _model("melcnn_small")
    report = export_onnx(m, tmp_path / "m.onnx")
    assert report.max_abs_diff_logits <= 1e-4
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["tags"] == m.config.tags and meta["input_samples"] == m.input_samples
    runner = load_runner(tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (3, m.input_samples)).astype(np.float32)
    with torch.inference_mode():
        _close(runner.logits(x), m(torch.from_numpy(x)).numpy())
    with torch.inference_mode():
        _close(runner.embed(x, "features", "max"), m.embed(torch.from_numpy(x), "features", "max").numpy())
    with pytest.raises(ValueError, match="holds the embeddings of layer features only, not 'block1'"):
        runner.embed(x, "block1")


def test_fused_twin_without_the_private_onednn_op_gives_the_same_outputs(monkeypatch):
    # The oneDNN conv + ReLU post-op is a private torch op: the fallback must agree.
    m = _model("samplecnn_rese2", width=0.0625)
    x = torch.randn(2, 1, m.input_samples)
    monkeypatch.setattr(fused, "_HAS_POINTWISE", True)
    twin = m.fuse_for_inference()
    monkeypatch.setattr(fused, "_HAS_POINTWISE", False)
    other = m.fuse_for_inference()
    convs = [c for c in twin.modules() if isinstance(c, fused.FusedConv)]
    assert convs and all(c.pointwise for c in convs)
    assert not any(c.pointwise for c in other.modules() if isinstance(c, fused.FusedConv))
    with torch.inference_mode():
        ref = m(x)
        with_op = twin(x)
        without = other(x)
    _close(with_op, ref)
    _close(without, ref)


def test_a_failing_onednn_kernel_switches_only_its_own_layer(monkeypatch):
    m = _model("samplecnn_small", width=0.0625)
    monkeypatch.setattr(fused, "_HAS_POINTWISE", True)
    twin, other = m.fuse_for_inference(), m.fuse_for_inference()

    def broken(*args):
        raise RuntimeError("no kernel for this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", broken, raising=False)
    x = torch.randn(2, 1, m.input_samples)
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match="oneDNN's fused convolution failed"):
        out = twin(x)
    _close(out, m(x).detach())
    assert not any(c.pointwise for c in twin.modules() if isinstance(c, fused.FusedConv))
    assert all(c.pointwise for c in other.modules() if isinstance(c, fused.FusedConv))
    assert fused._HAS_POINTWISE  # nothing process-wide changed


def test_fusion_is_per_block_and_refuses_unknown_blocks():
    m = _model("samplecnn_small")
    twin = m.fuse_for_inference()
    assert all(type(b).__name__ == "FusedBasicBlock" for b in twin.blocks)

    class Mystery(nn.Module):
        def forward(self, h):
            return h

    m.blocks[3] = Mystery()
    with pytest.raises(TypeError, match="Mystery has no inference fusion"):
        m.fuse_for_inference()


def test_fused_intermediates_features_and_head_equal_plain():
    m = _model("samplecnn_small")
    x = torch.randn(3, 1, m.input_samples)
    twin = m.fuse_for_inference()
    with torch.inference_mode():
        a = twin.forward_intermediates(x, ["frontend", "block1", "block8", "features"])
        b = m.forward_intermediates(x, ["frontend", "block1", "block8", "features"])
        for k in b:
            _close(a[k], b[k])
        feats = m.forward_features(x)
        _close(twin.forward_features(x), feats)
        _close(twin.forward_head(feats), m.forward_head(feats))
        _close(twin.forward_head(feats, pre_logits=True), m.forward_head(feats, pre_logits=True))


def test_auto_is_exact_onnxruntime_on_cpu_and_bf16_is_opt_in():
    m = _model("samplecnn_small")
    assert isinstance(optimize_for_inference(m), OrtRunner)
    bf = optimize_for_inference(m, precision="bf16")
    assert isinstance(bf, TorchRunner) and bf.module.dtype == torch.bfloat16
    x = np.random.default_rng(1).uniform(-1, 1, (2, m.input_samples)).astype(np.float32)
    with torch.inference_mode():
        ref = m(torch.from_numpy(x)).numpy()
    out = bf.logits(x)
    assert out.dtype == np.float32
    # bf16 keeps ~3 significant digits: close, but not fp32-close.
    assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()


def test_batch_equals_single_calls():
    runner = optimize_for_inference(_model("samplecnn_small"))
    x = np.random.default_rng(2).uniform(-1, 1, (4, runner.input_samples)).astype(np.float32)
    _close(runner.logits(x), np.concatenate([runner.logits(x[i:i + 1]) for i in range(4)]))


def test_export_is_cached_per_model(monkeypatch):
    m = _model("samplecnn_small", seed=11)
    calls = []
    real = inf_onnx.export_graph
    monkeypatch.setattr(inf_onnx, "export_graph", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    first = optimize_for_inference(m, "onnxruntime")
    second = optimize_for_inference(m, "onnxruntime")
    assert calls == [("scores", inf_onnx.ONNX_OPSET)]  # the second runner reused the export
    x = np.zeros((1, m.input_samples), np.float32)
    np.testing.assert_array_equal(first.logits(x), second.logits(x))
    with torch.no_grad():
        m.fc.bias.add_(1.0)  # other weights, another cache entry
    third = optimize_for_inference(m, "onnxruntime")
    assert len(calls) == 2
    assert not np.allclose(third.logits(x), first.logits(x))


def test_bad_options_and_inputs_are_one_line_value_errors():
    m = _model("samplecnn_small")
    with pytest.raises(ValueError, match="backend must be one of"):
        optimize_for_inference(m, backend="tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_inference(m, precision="fp8")
    with pytest.raises(ValueError, match="fp32 only"):
        optimize_for_inference(m, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="needs a SampleCNN"):
        optimize_for_inference(nn.Linear(2, 2))
    for backend in ("plain", "torch", "onnxruntime"):
        runner = optimize_for_inference(m, backend=backend)
        with pytest.raises(ValueError, match=rf"expected windows of shape \(batch, {m.input_samples}\)"):
            runner.logits(np.zeros((2, 100), np.float32))
        with pytest.raises(ValueError, match="unknown layer"):
            runner.embed(np.zeros((1, m.input_samples), np.float32), layer="block99")
        with pytest.raises(ValueError, match="pool must be"):
            runner.embed(np.zeros((1, m.input_samples), np.float32), pool="median")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        check_device("gpu0")


@pytest.mark.parametrize("backend", ["plain", "auto"])
def test_bench_infer_runs_every_backend(backend, capsys):
    import json

    from samplecnn.cli import main

    assert main(["bench", "infer", "--model", "samplecnn_small", "--batch", "2", "--iters", "1",
                 "--warmup", "0", "--backend", backend, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == backend and out["segments_per_s"] > 0
    assert out["module"] == ("TorchRunner" if backend == "plain" else "OrtRunner")
