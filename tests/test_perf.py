"""The fast paths of `samplecnn.perf` give the plain model's outputs (issue 7).

No timings are asserted; speed lives in benchmarks/ and BENCHMARKS.md.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from samplecnn import perf
from samplecnn.training import fast as train_fast
from samplecnn.training.device_sampler import DeviceSegmentSampler
from samplecnn.cli import main
from samplecnn.models import create_model


def _model(name: str, seed: int = 0) -> nn.Module:
    """An eval model whose BatchNorms have non-trivial statistics (fresh ones are identity)."""
    m = create_model(name, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    # Relative to the output's scale: folding reorders float sums.
    scale = b.abs().max().item() + 1e-6
    assert a.shape == b.shape
    assert (a.float() - b.float()).abs().max().item() <= rtol * scale


# Small variants cover raw/frame/mel front ends and odd/even m; the 3^9 SE, ReSE-2 and
# multi-level variants cover the other blocks and heads (batch 2 keeps them quick).
# (fold_batchnorm, the "eager" backend, is generic module surgery: small variants suffice.)
SMALL = ["samplecnn_small", "framecnn_small", "melcnn_small", "m2n6_16384"]
LARGE = ["samplecnn_se", "samplecnn_rese2", "samplecnn_ml"]
CASES = ([(n, b) for n in SMALL for b in ("eager", "torch", "onnxruntime")]
         + [(n, b) for n in LARGE for b in ("torch", "onnxruntime")])


@pytest.mark.parametrize("name,backend", CASES)
def test_fp32_backends_equal_plain_model(name, backend):
    m = _model(name)
    x = torch.randn(2, 1, m.input_samples, generator=torch.Generator().manual_seed(3))
    fast = perf.optimize_for_inference(m, backend=backend)
    with torch.inference_mode():
        _close(fast(x), m(x))
        _close(fast(x[:, 0]), m(x))  # (B, samples) accepted as by the model
        for layer in ("frontend", "block2", "features"):
            for pool in ("mean", "max"):
                _close(fast.embed(x, layer, pool), m.embed(x, layer, pool))
    assert fast.layer_names == m.layer_names
    assert fast.config.tags == m.config.tags


def test_fused_intermediates_and_features_equal_plain():
    m = _model("samplecnn_small")
    x = torch.randn(3, 1, m.input_samples)
    fused = perf.FusedSampleCNN(m)
    with torch.inference_mode():
        a = fused.forward_intermediates(x, ["frontend", "block1", "block8", "features"])
        b = m.forward_intermediates(x, ["frontend", "block1", "block8", "features"])
        for k in b:
            _close(a[k], b[k])
        _close(fused.forward_features(x), m.forward_features(x))
        feats = m.forward_features(x)
        _close(fused.forward_head(feats), m.forward_head(feats))
        _close(fused.forward_head(feats, pre_logits=True), m.forward_head(feats, pre_logits=True))


def test_fold_batchnorm_removes_batchnorm_and_leaves_model_intact():
    m = _model("samplecnn_small")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    folded = perf.fold_batchnorm(m)
    kinds = {type(mod) for mod in folded.modules()}
    assert nn.BatchNorm1d not in kinds
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    x = torch.randn(2, 1, m.input_samples)
    with torch.inference_mode():
        _close(folded(x), m(x))


def test_batch_equals_single_calls():
    m = _model("samplecnn_small")
    fast = perf.optimize_for_inference(m)
    x = torch.randn(4, 1, m.input_samples)
    with torch.inference_mode():
        whole = fast(x)
        single = torch.cat([fast(x[i:i + 1]) for i in range(4)])
    _close(whole, single)


def test_auto_is_exact_onnxruntime_on_cpu_and_bf16_is_opt_in():
    m = _model("samplecnn_small")
    assert isinstance(perf.optimize_for_inference(m), perf.OrtSampleCNN)
    bf = perf.optimize_for_inference(m, precision="bf16")
    assert isinstance(bf, perf.FusedSampleCNN) and bf.dtype == torch.bfloat16
    x = torch.randn(2, 1, m.input_samples)
    with torch.inference_mode():
        ref, out = m(x), bf(x)
    assert out.dtype == torch.float32
    # bf16 keeps ~3 significant digits: close, but not fp32-close.
    assert (out - ref).abs().max().item() <= 0.05 * ref.abs().max().item()


def test_bad_options_and_inputs_are_one_line_value_errors():
    m = _model("samplecnn_small")
    with pytest.raises(ValueError, match="backend must be one of"):
        perf.optimize_for_inference(m, backend="tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        perf.optimize_for_inference(m, precision="fp8")
    with pytest.raises(ValueError, match="fp32 only"):
        perf.optimize_for_inference(m, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="needs a SampleCNN"):
        perf.optimize_for_inference(nn.Linear(2, 2))
    for backend in ("torch", "onnxruntime"):
        fast = perf.optimize_for_inference(m, backend=backend)
        with pytest.raises(ValueError, match="expected audio of shape"):
            fast(torch.zeros(2, 2, m.input_samples))
        with pytest.raises(ValueError, match=rf"expected {m.input_samples} samples per segment.*got 100"):
            fast(torch.zeros(2, 1, 100))
        with pytest.raises(ValueError, match="unknown layer"):
            fast.embed(torch.zeros(1, 1, m.input_samples), layer="block99")
        with pytest.raises(ValueError, match="pool must be"):
            fast.embed(torch.zeros(1, 1, m.input_samples), pool="median")


def test_training_forward_matches_model_and_trains():
    m = create_model("samplecnn_small", seed=0).train()
    x = torch.randn(4, 1, m.input_samples)
    fwd = train_fast.prepare_for_training(m, "plain")
    torch.manual_seed(0)
    a = fwd(x)
    torch.manual_seed(0)
    b = m(x)
    assert torch.equal(a, b)
    a.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    bf = train_fast.TrainingForward(m, precision="bf16")
    out = bf(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="training mode must be one of"):
        train_fast.prepare_for_training(m, "jit")


@pytest.mark.parametrize("name", ["samplecnn_small", "framecnn_small", "melcnn_small"])
def test_retain_mode_is_the_plain_training_step(name):
    """mode="retain" only changes the allocator: loss, gradients, BN running statistics
    and the optimizer's update of the model's own parameters equal the plain step's."""
    def one_step(mode):
        m = create_model(name, seed=0).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        fwd = train_fast.prepare_for_training(m, mode)
        assert fwd.model is m
        g = torch.Generator().manual_seed(1)
        x = torch.randn(4, 1, m.input_samples, generator=g)
        y = (torch.rand(4, m.config.n_tags, generator=g) < 0.2).float()
        torch.manual_seed(0)  # the same dropout masks
        loss = nn.functional.binary_cross_entropy_with_logits(fwd(x), y)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in m.named_parameters()}
        opt.step()
        return loss.detach(), grads, m.state_dict()

    loss_a, grads_a, state_a = one_step("plain")
    loss_b, grads_b, state_b = one_step("retain")
    assert train_fast.retain_freed_memory() is True
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-7, msg=k)
    assert state_a.keys() == state_b.keys()  # checkpoint keys are the model's own
    init = create_model(name, seed=0).state_dict()
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-5, atol=1e-7, msg=k)
    assert not torch.equal(state_b["fc.weight"], init["fc.weight"])  # the update happened
    bn = next(k for k in init if k.endswith("running_mean"))
    assert not torch.equal(state_b[bn], init[bn])  # BN statistics moved, as in the plain step


def test_device_segment_sampler_cuts_the_store_segments(tmp_path):
    from samplecnn.data import SegmentStore, prepare_csv
    from samplecnn.testing.datasets import make_csv_folder

    make_csv_folder(tmp_path / "csv", n_clips=12, duration_s=0.5, sample_rate=8000)
    prepare_csv(tmp_path / "csv", tmp_path / "store", sample_rate=8000, min_samples=0,
                workers=1, progress=False)
    store = SegmentStore(tmp_path / "store")
    # Clips are 4,000 samples: 5,000 checks the zero-padded crop of a short clip.
    for seg in (3000, 5000):
        sampler = DeviceSegmentSampler(store, "train", seg, batch_size=5,
                                            segments_per_clip=3, seed=1)
        n_train = len(store.split_indices("train"))
        batches = list(sampler)
        assert len(batches) == len(sampler) == -(-n_train * 3 // 5)
        seen = 0
        for b in batches:
            assert b["audio"].shape[1:] == (1, seg) and b["audio"].dtype == torch.float32
            for k in range(len(b["clip"])):
                clip, start = int(b["clip"][k]), int(b["starts"][k])
                want = store.segment(clip, start, seg)
                np.testing.assert_allclose(b["audio"][k, 0].numpy(), want, atol=1e-6)
                np.testing.assert_array_equal(b["target"][k].numpy(), store.labels[clip])
                assert 0 <= start <= max(0, int(store.lengths[clip]) - seg)
            seen += len(b["clip"])
        assert seen == n_train * 3
    # Same seed and epoch: same crops; another epoch: others.
    s = DeviceSegmentSampler(store, "train", 1000, batch_size=4, seed=1)
    first = next(iter(s))["starts"]
    assert torch.equal(first, next(iter(s))["starts"])
    s.set_epoch(1)
    assert not torch.equal(first, next(iter(s))["starts"])


def test_bench_cli_reports_segments_per_second(capsys):
    assert main(["bench", "infer", "--model", "samplecnn_small", "--batch", "2",
                 "--iters", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["segments_per_s"] > 0 and res["module"] == "OrtSampleCNN" and res["batch"] == 2
    assert main(["bench", "train", "--model", "samplecnn_small", "--batch", "2",
                 "--iters", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["segments_per_s"] > 0 and res["train_mode"] == "plain"
    assert main(["bench", "infer", "--model", "samplecnn_smal", "--batch", "2"]) == 2
    assert "unknown model" in capsys.readouterr().err
