"""The m^n-DCNN family: shapes, sizes, blocks, forward contract, configs, seeds."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from samplecnn.models import (PAPER_TABLE, ModelConfig, SampleCNN, authors_channels,
                              create_model, describe_model, get_model_config, list_models,
                              model_from_config)
from samplecnn.models.layers import MultiLevelHead, ReSE2Block, SqueezeExcitation

PAPER_ROWS = [f"m{m}n{n}_{inp}" for (m, inp), rows in PAPER_TABLE.items() for n, _ in rows]


def _expected_params(c: ModelConfig) -> int:
    """Parameter count of a basic-block model computed from the layer table by hand."""
    conv = lambda cin, cout, k: cin * cout * k + cout  # noqa: E731
    bn = lambda ch: 2 * ch  # noqa: E731
    total = conv(1, 128, c.first_filter) + bn(128)
    cin = 128
    for cout in authors_channels(c.n):
        total += conv(cin, cout, c.m) + bn(cout)
        cin = cout
    total += conv(cin, 512, 1) + bn(512)
    return total + 512 * c.n_tags + c.n_tags


def test_paper_table_is_registered_whole():
    # The notes' table has 8 + 8 + 6 + 6 + 4 + 4 + 3 + 3 = 42 rows (issue 2 says 36).
    assert len(PAPER_ROWS) == 42 == len(set(PAPER_ROWS))
    assert set(PAPER_ROWS) <= set(list_models())


@pytest.mark.parametrize("name", PAPER_ROWS)
def test_every_paper_variant_reduces_to_one_frame(name):
    c = get_model_config(name)
    # frames = m^n, first filter = input / m^n, one frame left after n pools of m.
    assert c.frames == c.m**c.n
    assert c.first_filter * c.frames == c.input_samples
    model = create_model(name, n_tags=7, seed=0).eval()
    x = torch.randn(1, 1, c.input_samples)
    with torch.no_grad():
        feats = model.forward_features(x)
        blocks = model.forward_intermediates(x, model.layer_names)
    assert blocks["frontend"].shape == (1, 128, c.frames)
    assert blocks[f"block{c.n}"].shape == (1, 512, 1)
    assert feats.shape == (1, 512, 1)
    assert model.forward_head(feats).shape == (1, 7)
    assert model.num_params() == _expected_params(get_model_config(name, n_tags=7))
    assert len([mod for mod in model.modules() if isinstance(mod, nn.Conv1d)]) == c.layers


def test_3_9_model_matches_the_paper():
    model = create_model("samplecnn", n_tags=50)
    assert model.num_params() == 1_869_874
    convs = sum(p.numel() for mod in model.modules() if isinstance(mod, nn.Conv1d) for p in mod.parameters())
    bns = sum(p.numel() for mod in model.modules() if isinstance(mod, nn.BatchNorm1d) for p in mod.parameters())
    assert (convs, bns, sum(p.numel() for p in model.fc.parameters())) == (1_838_336, 5_888, 25_650)
    assert model.config.block_channels == [128, 128, 256, 256, 256, 256, 256, 256, 512]
    # About 1.73 G multiply-adds, 56 % of them in layer 2 (notes section 2).
    assert model.flops() / 2 == pytest.approx(1.73e9, rel=0.01)
    layer2 = 19683 * 128 * 128 * 3
    assert layer2 / (model.flops() / 2) == pytest.approx(0.56, abs=0.01)
    assert get_model_config("samplecnn").to_dict() | {"extra": {}} == \
        get_model_config("m3n9_59049").to_dict() | {"extra": {}}


def test_bn_epsilon_and_he_uniform_init():
    model = create_model("m3n4_19683", seed=1)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    for mod in model.modules():
        if isinstance(mod, (nn.Conv1d, nn.Linear)):
            bound = (6.0 / mod.weight[0].numel()) ** 0.5
            assert mod.weight.abs().max() <= bound
            assert mod.weight.abs().max() > 0.9 * bound  # uniform, fills its range
            assert torch.count_nonzero(mod.bias) == 0


@pytest.mark.parametrize("frame,n", [(729, 4), (243, 5), (81, 6), (27, 7)])
def test_mel_baselines(frame, n):
    model = create_model(f"mel_f{frame}", n_tags=5, seed=0).eval()
    c = model.config
    assert (c.frontend, c.first_filter, c.n, c.n_mels) == ("mel", frame, n, 128)
    assert "mel" in c.family and c.level == "frame"
    x = torch.randn(2, 1, 59049)
    with torch.no_grad():
        front = model.forward_intermediates(x, ["frontend"])["frontend"]
        out = model(x)
    assert front.shape == (2, 128, 59049 // frame)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_mel_front_end_is_configurable():
    model = create_model("mel_f243", n_tags=3, n_mels=40, f_max=8000.0, sample_rate=16000)
    x = torch.randn(1, 1, 59049)
    assert model.forward_intermediates(x, ["frontend"])["frontend"].shape == (1, 40, 243)


def test_mel_front_end_tracks_frequency():
    """A pure tone lights up the mel band that holds its frequency."""
    model = create_model("mel_f729", n_tags=2).eval()
    t = torch.arange(59049) / 22050
    energies = []
    for f in (200.0, 4000.0):
        x = torch.sin(2 * torch.pi * f * t).view(1, 1, -1)
        with torch.no_grad():
            mel = model.frontend.spec(x.squeeze(1))
        energies.append(mel.mean(-1).argmax().item())
    assert energies[0] < energies[1]


def test_squeeze_excitation_gates_channels():
    se = SqueezeExcitation(32, reduction=16)
    assert se.fc1.out_features == 2
    x = torch.rand(3, 32, 10)
    y = se(x)
    gate = y / x
    # One gate in (0, 1) per channel and example, constant over time.
    assert torch.allclose(gate, gate[..., :1].expand_as(gate), atol=1e-6)
    assert ((gate > 0) & (gate < 1)).all()


def test_rese2_block_residual_and_shapes():
    block = ReSE2Block(16, 32, m=3).eval()
    assert isinstance(block.shortcut, nn.Sequential)  # 1x1 conv where widths change
    assert block(torch.randn(2, 16, 27)).shape == (2, 32, 9)
    same = ReSE2Block(32, 32, m=3).eval()
    assert isinstance(same.shortcut, nn.Identity)
    # With the residual branch's last BN zeroed, the block is relu(x) pooled.
    nn.init.zeros_(same.bn2.weight)
    nn.init.zeros_(same.bn2.bias)
    x = torch.randn(2, 32, 27)
    assert torch.allclose(same(x), nn.functional.max_pool1d(torch.relu(x), 3))


def test_multi_level_head_uses_last_three_blocks():
    model = create_model("samplecnn_rese2_ml", n_tags=4, width=0.25, seed=0).eval()
    assert isinstance(model.head, MultiLevelHead)
    widths = model.config.block_channels
    assert model.head.fc.in_features == sum(widths[-3:])
    x = torch.randn(2, 1, 59049)
    with torch.no_grad():
        inter = model.forward_intermediates(x, ["block7", "block8", "block9"])
        pooled = torch.cat([inter[f"block{i}"].amax(-1) for i in (7, 8, 9)], dim=1)
        expected = torch.relu(model.head.bn(model.head.fc(pooled)))
        assert torch.allclose(model.forward_features(x).squeeze(-1), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["samplecnn_se", "samplecnn_rese2", "samplecnn_ml",
                                  "samplecnn_se_ml", "samplecnn_rese2_ml"])
def test_follow_up_variants_forward(name):
    model = create_model(name, n_tags=6, width=0.125, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, model.config.input_samples))
    assert out.shape == (2, 6) and torch.isfinite(out).all()


def test_registry_loop_every_variant_is_finite_and_described():
    for name in list_models():
        row = describe_model(name)
        assert set(row) >= {"name", "family", "m", "n", "input_samples", "frames",
                            "first_filter", "layers", "params", "gflops"}
        if row["family"].startswith("leenet"):  # padded convs: ceil(L / 3) frames, any L
            assert row["frames"] == -(-row["input_samples"] // row["first_filter"])
        else:
            assert row["frames"] * row["first_filter"] == row["input_samples"]
            assert row["layers"] == row["n"] + 2
        assert row["params"] > 0 and row["gflops"] > 0
        json.dumps(row)
        # Finite: a forward pass of the variant (narrowed: the layout is what is checked)
        # gives finite logits of the right shape, with the input length it describes.
        model = create_model(name, n_tags=3, seed=0, width=0.0625).eval()
        assert model.config.input_samples == row["input_samples"], name
        with torch.inference_mode():
            out = model(torch.randn(2, 1, row["input_samples"], generator=torch.Generator().manual_seed(0)))
        assert out.shape == (2, 3) and torch.isfinite(out).all(), name


def test_small_variants_train_step_reaches_first_layer():
    for name in ("samplecnn_small", "framecnn_small", "melcnn_small"):
        model = create_model(name, n_tags=5, seed=0).train()
        x = torch.randn(3, 1, model.config.input_samples)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), torch.rand(3, 5))
        loss.backward()
        first = model.frontend.conv[0] if name != "melcnn_small" else model.frontend.bn
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0, name


def test_gradients_reach_first_layer_of_3_9():
    model = create_model("samplecnn", n_tags=50, width=0.25, seed=0).train()
    x = torch.randn(2, 1, 59049)
    model(x).sum().backward()
    assert model.frontend.conv[0].weight.grad.abs().sum() > 0


def test_embeddings_by_layer_name():
    model = create_model("samplecnn_small", n_tags=3, seed=0).eval()
    x = torch.randn(2, 1, 19683)
    with torch.no_grad():
        for name in model.layer_names:
            emb = model.embed(x, layer=name)
            assert emb.shape == (2, model.layer_width(name))
        feats = model.forward_features(x)
        assert torch.allclose(model.embed(x, "features", pool="max"), feats.squeeze(-1))
        assert torch.allclose(model.forward_head(feats, pre_logits=True), feats.squeeze(-1))
    with pytest.raises(ValueError, match="unknown layer 'block99'"):
        model.embed(x, layer="block99")


def test_batched_call_equals_single_calls():
    model = create_model("samplecnn_small", n_tags=4, seed=0).eval()
    x = torch.randn(3, 1, 19683)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_bad_input_shapes_are_refused():
    model = create_model("samplecnn_small", n_tags=3)
    with pytest.raises(ValueError, match=r"expected 19683 samples.*got 1000"):
        model(torch.randn(1, 1, 1000))
    with pytest.raises(ValueError, match=r"got \(2, 2, 19683\)"):
        model(torch.randn(2, 2, 19683))
    assert model.eval()(torch.randn(2, 19683)).shape == (2, 3)  # (B, T) is accepted


def test_rebuild_from_stored_config_gives_identical_outputs(tmp_path):
    model = create_model("samplecnn_se_ml", tags=["a", "b", "c"], width=0.125, seed=3).eval()
    stored = json.loads(json.dumps(model.config.to_dict()))
    clone = model_from_config(stored)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.randn(2, 1, 59049)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    assert clone.config == model.config and clone.tags == ["a", "b", "c"]


def test_checkpoint_round_trip(tmp_path):
    from samplecnn.checkpoint import load_model, read_checkpoint_info, save_checkpoint

    model = create_model("samplecnn_small", tags=["rock", "pop"], seed=0).eval()
    path = save_checkpoint(tmp_path / "m.ckpt", model, note="test")
    info = read_checkpoint_info(path)
    assert info["model_config"]["tags"] == ["rock", "pop"]
    assert info["model_config"]["sample_rate"] == 16000 and info["note"] == "test"
    loaded = load_model(path)
    x = torch.randn(1, 1, 19683)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    # Lightning-style checkpoints: same entry, keys prefixed with "model.".
    lit = {"samplecnn": info, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    torch.save(lit, tmp_path / "lit.ckpt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "lit.ckpt")(x), model(x))
    with pytest.raises(ValueError, match="without tag names"):
        save_checkpoint(tmp_path / "x.ckpt", create_model("samplecnn_small"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt: not a readable checkpoint"):
        load_model(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt: not a samplecnn checkpoint"):
        load_model(tmp_path / "other.ckpt")


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("samplecnn_small", seed=7)
    after = torch.rand(1)
    b = create_model("samplecnn_small", seed=7)
    c = create_model("samplecnn_small", seed=8)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["frontend.conv.0.weight"], sc["frontend.conv.0.weight"])


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="not a multiple of m\\*\\*n"):
        ModelConfig(m=3, n=9, input_samples=60000)
    with pytest.raises(ValueError, match="unknown model 'samplecnx'; did you mean samplecnn"):
        create_model("samplecnx")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("samplecnn", kernel_size=5)
    with pytest.raises(ValueError, match="3 tag names given for n_tags=2"):
        ModelConfig(n_tags=2, tags=["a", "b", "c"])
    with pytest.raises(ValueError, match="block must be one of"):
        create_model("samplecnn", block="dense")


def test_port_options_first_layer_padding_and_wide_head():
    model = create_model("samplecnn", n_tags=50, frontend_padding=1, head_kernel=3)
    # The port with a 3-wide last conv has 2,394,162 parameters (notes section 2).
    assert model.num_params() == 2_394_162
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 59049)).shape == (1, 50)
    assert isinstance(model, SampleCNN)


def test_cli_models_json_and_table(capsys):
    from samplecnn.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert {"name", "family", "m", "n", "input_samples", "frames", "first_filter",
                "layers", "params", "gflops"} <= set(r)
    by_name = {r["name"]: r for r in rows}
    assert by_name["samplecnn"]["params"] == 1_869_874
    assert by_name["samplecnn"]["gflops"] == pytest.approx(3.456, abs=1e-3)
    for frame in (729, 243, 81, 27):
        mel = by_name[f"mel_f{frame}"]
        assert "mel" in mel["family"] and mel["first_filter"] == frame
    assert by_name["m3n4_59049"]["family"] == "frame-level raw"
    assert by_name["m3n9_59049"]["family"] == "sample-level raw"

    assert main(["models", "m5*"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "family", "m"]
    assert [line.split()[0] for line in table[2:]] == list_models("m5*")

    assert main(["models", "samplecnx"]) == 2
    err = capsys.readouterr().err.strip()
    prefix = "samplecnn models: error: unknown model 'samplecnx'; did you mean "
    assert err.startswith(prefix) and len(err.splitlines()) == 1
    assert "samplecnn" in err[len(prefix):].rstrip("?").split(", ")
