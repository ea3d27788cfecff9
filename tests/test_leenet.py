"""PANNs' LeeNet11 / LeeNet24: registry, forward contract and fusion, whole-clip scoring,
`samplecnn import --from panns` against an independent forward pass, weights by name.

The reference below is written from the facts of PANNs' pytorch/models.py (issue 22) in
plain torch.nn.functional calls on a PANNs state dict, never through samplecnn's model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samplecnn import pretrained
from samplecnn.checkpoint import load_model
from samplecnn.cli import main
from samplecnn.importers import AUDIOSET_LABELS, preset_tags
from samplecnn.inference.batching import score_messages
from samplecnn.models import create_model, describe_model
from samplecnn.pretrained import resolve
from samplecnn.tagging import Tagger
from samplecnn.windows import WindowGrid, chunks

SR = 32000
WIDTHS = {11: [64, 64, 64, 128, 128, 128, 128, 128, 256], 24: [64, 96, 128, 128, 256, 256, 512, 512, 1024]}
FC1 = {11: 512, 24: 1024}


# -- the reference: PANNs' LeeNet from the issue's facts -----------------------------------
def panns_state(depth: int, n_classes: int = 527, seed: int = 0) -> dict:
    """A state dict in PANNs' key layout, random weights and BN statistics."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    sd, c_in = {}, 1
    for i, c_out in enumerate(WIDTHS[depth], start=1):
        convs = [("conv1", "bn1", c_in)] + ([("conv2", "bn2", c_out)] if depth == 24 else [])
        for conv, bn, ci in convs:
            sd[f"conv_block{i}.{conv}.weight"] = rnd(c_out, ci, 3, scale=(2.0 / (3 * ci)) ** 0.5)
            sd[f"conv_block{i}.{bn}.weight"] = 1 + rnd(c_out, scale=0.1)
            sd[f"conv_block{i}.{bn}.bias"] = rnd(c_out, scale=0.1)
            sd[f"conv_block{i}.{bn}.running_mean"] = rnd(c_out, scale=0.1)
            sd[f"conv_block{i}.{bn}.running_var"] = 0.5 + torch.rand(c_out, generator=g)
            sd[f"conv_block{i}.{bn}.num_batches_tracked"] = torch.tensor(1000)
        c_in = c_out
    sd["fc1.weight"] = rnd(FC1[depth], c_in, scale=c_in ** -0.5)
    sd["fc1.bias"] = rnd(FC1[depth], scale=0.1)
    sd["fc_audioset.weight"] = rnd(n_classes, FC1[depth], scale=FC1[depth] ** -0.5)
    sd["fc_audioset.bias"] = rnd(n_classes, scale=0.1)
    return sd


def panns_logits(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """PANNs' LeeNet forward in eval mode, logits (PANNs returns their sigmoid): (B, L) -> (B, C)."""
    h = x[:, None, :]
    for i in range(1, 10):
        for j, conv, bn in ((0, "conv1", "bn1"), (1, "conv2", "bn2"))[: 2 if depth == 24 else 1]:
            stride = 3 if (i == 1 and j == 0) else 1
            h = F.conv1d(h, sd[f"conv_block{i}.{conv}.weight"], stride=stride, padding=1)
            h = F.batch_norm(h, sd[f"conv_block{i}.{bn}.running_mean"], sd[f"conv_block{i}.{bn}.running_var"],
                             sd[f"conv_block{i}.{bn}.weight"], sd[f"conv_block{i}.{bn}.bias"], eps=1e-5)
            h = F.relu(h)
        if i >= 2 and not (depth == 24 and i == 9):
            h = F.max_pool1d(h, kernel_size=3, padding=1)
    h = torch.max(h, dim=2)[0] + torch.mean(h, dim=2)
    h = F.relu(F.linear(h, sd["fc1.weight"], sd["fc1.bias"]))
    return F.linear(h, sd["fc_audioset.weight"], sd["fc_audioset.bias"])


def save_panns(path, sd: dict) -> None:
    """PANNs' checkpoint layout, with a sampler state of NumPy arrays (BalancedTrainSampler)."""
    rng = np.random.default_rng(0)
    sampler = {"indexes_per_class": [np.sort(rng.choice(1000, 5, replace=False)) for _ in range(4)],
               "queue": [np.int64(i) for i in rng.integers(0, 527, 8)],
               "pointers_of_classes": [0, 3, 1, 2]}
    torch.save({"iteration": 540000, "model": sd, "sampler": sampler}, path)


# -- registry and model --------------------------------------------------------------------
def test_registry_counts_and_listing(capsys):
    assert create_model("leenet11", n_tags=527).num_params() == 748_367
    assert create_model("leenet24", n_tags=527).num_params() == 10_003_791
    assert main(["models", "leenet*", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["leenet11"]["sample_rate"] == SR and rows["leenet11"]["input_samples"] == 320000
    assert "leenet" in rows["leenet24"]["family"]
    assert describe_model("leenet11", n_tags=527)["params"] == 748_367


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
            mod.weight.data.copy_(1 + 0.1 * torch.randn(mod.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 728, 1000, 4097])
def test_leenet11_any_length_and_fused_twin_agree(length):
    model = _randomize_bn(create_model("leenet11", n_tags=7, seed=1))
    x = torch.randn(2, 1, length) * 0.5
    with torch.no_grad():
        plain = model(x)
        fused = model.fuse_for_inference()(x)
        feats = model.forward_intermediates(x, ["features", "block5"])
    assert plain.shape == (2, 7) and torch.allclose(plain, fused, atol=1e-5)
    assert feats["features"].shape == (2, 512, 1)
    assert model.layer_names[-1] == "features" and model.layer_width("block8") == 256


def test_leenet24_forward_and_fusion_on_a_short_clip():
    model = _randomize_bn(create_model("leenet24", n_tags=5, seed=2))
    x = torch.randn(1, 1, 2000) * 0.5
    with torch.no_grad():
        assert torch.allclose(model(x), model.fuse_for_inference()(x), atol=1e-5)
    assert isinstance(model.blocks[-1].drop, torch.nn.Identity) and not model.blocks[-1].pool
    assert model.blocks[0].drop.p == 0.1 and model.head.dropout.p == 0.5


def test_bad_leenet_configs_are_refused():
    with pytest.raises(ValueError, match="arch 'leenet' needs block"):
        create_model("leenet11", block="basic")
    with pytest.raises(ValueError, match="last_pool=False is for arch 'leenet'"):
        create_model("samplecnn", last_pool=False)


# -- the whole-clip window grid and the batching loop ---------------------------------------
def test_whole_clip_grid_never_pads():
    g = WindowGrid(10, 10, "pad", whole_clip=True)
    assert g.starts(7).tolist() == [0] and g.lengths(g.starts(7), 7).tolist() == [7]
    x = np.arange(25, dtype=np.float32)
    wins = g.cut(x)
    assert [len(w) for w in wins] == [10, 10, 5] and wins[2].tolist() == list(range(20, 25))
    streamed = list(g.stream(iter([x[:8], x[8:17], x[17:]])))
    assert [s for s, _ in streamed] == [0, 10, 20]
    assert all(np.array_equal(a, b) for (_, a), b in zip(streamed, wins))
    assert [len(w) for w in WindowGrid(10, 10, "drop", whole_clip=True).cut(x)] == [10, 10]
    assert [len(w) for _, w in WindowGrid(10, 10, "drop", whole_clip=True).stream([x[:4]])] == [4]
    groups = list(chunks(zip(g.starts(25), wins), 8))
    assert [w.shape for _, w in groups] == [(2, 10), (1, 5)]


def test_batching_loop_batches_equal_lengths_only():
    seen = []

    def compute(x):
        seen.append(x.shape)
        return x.sum(axis=1, keepdims=True)

    msgs = [("windows", "a", np.array([0, 4]), np.ones((2, 4), np.float32)),
            ("windows", "a", np.array([8]), np.ones((1, 3), np.float32)),
            ("done", "a", {}),
            ("windows", "b", np.array([0]), np.ones((1, 2), np.float32)),
            ("windows", "c", np.array([0]), 2 * np.ones((1, 4), np.float32)),
            ("done", "b", {}), ("done", "c", {})]
    out = {r.key: r.outputs[:, 0].tolist() for r in score_messages(msgs, compute, batch_size=3)}
    assert out == {"a": [4, 4, 3], "b": [2], "c": [8]}
    # One length per batch; when 3 windows wait, the length whose oldest came first runs.
    assert seen == [(2, 4), (1, 3), (1, 2), (1, 4)]


# -- import from PANNs' file layout ----------------------------------------------------------
@pytest.fixture(scope="module")
def leenet11_file(tmp_path_factory):
    sd = panns_state(11, seed=3)
    path = tmp_path_factory.mktemp("panns") / "LeeNet11_mAP=0.266.pth"
    save_panns(path, sd)
    return path, sd


def test_panns_file_is_refused_by_plain_safe_loading(leenet11_file):
    with pytest.raises(Exception, match="(?i)weights only|unsupported global|allowlist"):
        torch.load(leenet11_file[0], weights_only=True)


def test_import_matches_panns_forward_and_whole_clip_scoring(leenet11_file, tmp_path, capsys):
    path, sd = leenet11_file
    out = tmp_path / "leenet11.ckpt"
    assert main(["import", str(path), "--from", "panns", "--out", str(out)]) == 0
    assert "leenet11" in capsys.readouterr().out
    model = load_model(out)
    assert model.config.tags == AUDIOSET_LABELS and model.config.tags[1] == "Male speech, man speaking"
    tagger = Tagger.from_checkpoint(out)  # the default runner (ONNX Runtime on the CPU)
    assert tagger.runner.name == "onnxruntime"
    for seconds in (7.3, 13.1):  # shorter than the 10 s window: whole; longer: 10 s + 3.1 s
        _check_clip(tagger, sd, seconds)


def _check_clip(tagger, sd, seconds):
    x = np.random.default_rng(4).uniform(-1, 1, int(seconds * SR)).astype(np.float32)
    taggram = tagger.taggram(x, sample_rate=SR)
    # PANNs applied per window the same way: 10 s windows, the last one as it is.
    wins = [x[s: s + 320000] for s in range(0, len(x), 320000)]
    with torch.no_grad():
        ref = np.concatenate([torch.sigmoid(panns_logits(sd, torch.from_numpy(w)[None], 11)).numpy()
                              for w in wins])
    assert taggram.scores.shape == (len(wins), 527)
    np.testing.assert_allclose(taggram.scores, ref, atol=1e-5)
    record = tagger.tag(x, sample_rate=SR)
    clip = ref.mean(axis=0)
    assert record["segments"] == len(wins) and record["duration_s"] == pytest.approx(seconds, abs=1e-4)
    np.testing.assert_allclose([record["tags"][t] for t in AUDIOSET_LABELS], clip, atol=1e-5)
    np.testing.assert_allclose(taggram.end_s, [min(10.0 * (k + 1), len(x) / SR) for k in range(len(wins))])
    emb = tagger.embed(x, sample_rate=SR)
    assert emb.windows.shape == (len(wins), 512)


def test_numpy_1_pickles_of_the_released_files_load(leenet11_file, tmp_path):
    """PANNs' files were pickled by NumPy 1.x (`numpy.core.multiarray._reconstruct`); ours by
    2.x (`numpy._core`). The same file with the 1.x names converts to the same model."""
    import io
    import zipfile

    from samplecnn.importers import convert

    path, sd = leenet11_file
    old = tmp_path / "LeeNet11_numpy1.pth"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)
    with pytest.raises(Exception):
        torch.load(io.BytesIO(old.read_bytes()), weights_only=True)
    x = torch.from_numpy(np.random.default_rng(8).uniform(-1, 1, 2000).astype(np.float32))[None]
    with torch.no_grad():
        np.testing.assert_allclose(convert(old, "panns")(x).numpy(), panns_logits(sd, x, 11).numpy(), atol=1e-5)


def test_import_leenet24_from_keys(tmp_path):
    sd = panns_state(24, n_classes=527, seed=5)
    path = tmp_path / "LeeNet24_mAP=0.336.pth"
    save_panns(path, sd)
    from samplecnn.importers import convert

    model = convert(path, "panns")
    assert model.config.block == "leenet2" and model.config.extra["imported_from"]["model"] == "leenet24"
    x = torch.from_numpy(np.random.default_rng(6).uniform(-1, 1, 3000).astype(np.float32))[None]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), panns_logits(sd, x, 24).numpy(), atol=1e-5)


def test_not_a_leenet_file_is_refused(tmp_path, capsys):
    path = tmp_path / "Cnn14.pth"
    torch.save({"iteration": 1, "model": {"conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}}, path)
    assert main(["import", str(path), "--from", "panns", "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "not a PANNs LeeNet checkpoint" in capsys.readouterr().err


def test_onnx_export_has_a_dynamic_time_axis(leenet11_file, tmp_path):
    path, sd = leenet11_file
    from samplecnn.importers import convert
    from samplecnn.inference.runners import OrtRunner

    model = convert(path, "panns")
    from samplecnn.inference.onnx import export_graph

    onnx_path = tmp_path / "leenet11.onnx"
    onnx_path.write_bytes(export_graph(model, "scores"))
    runner = OrtRunner.from_file(onnx_path)
    assert runner.whole_clip
    for n in (1000, 50000):
        x = np.random.default_rng(n).uniform(-1, 1, (2, n)).astype(np.float32)
        with torch.no_grad():
            ref = panns_logits(sd, torch.from_numpy(x), 11).numpy()
        np.testing.assert_allclose(runner.logits(x), ref, atol=1e-4)


# -- weights by name ----------------------------------------------------------------------------
def test_panns_names_are_listed_with_the_audioset_labels():
    for name, mean_ap in (("panns-leenet11", 0.266), ("panns-leenet24", 0.336)):
        entry = pretrained.get_pretrained(name)
        assert entry.tag_names() == AUDIOSET_LABELS and len(AUDIOSET_LABELS) == 527
        assert entry.sample_rate == SR and entry.reported["map"] == mean_ap
        assert "3987831" in entry.files[0].url and "%3D" in entry.files[0].url
        assert entry.files[0].file_name.endswith("_mAP=" + str(mean_ap) + ".pth")
        assert "CC BY 4.0" in entry.license
    assert preset_tags("panns-audioset")[74] == "Dog"


def test_panns_download_converts_and_records_its_hash(leenet11_file, tmp_path, monkeypatch, capsys):
    from test_pretrained import _Server

    path, sd = leenet11_file
    monkeypatch.setenv("SAMPLECNN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SAMPLECNN_MIRROR", raising=False)
    server = _Server()
    try:
        server.files["/mirror/panns-leenet11/LeeNet11_mAP%3D0.266.pth"] = path.read_bytes()
        monkeypatch.setenv("SAMPLECNN_MIRROR", server.url + "/mirror")
        model = load_model(resolve("panns-leenet11"))
        assert "publishes no hash; recorded its sha256" in capsys.readouterr().err
        x = torch.from_numpy(np.random.default_rng(7).uniform(-1, 1, 5000).astype(np.float32))[None]
        with torch.no_grad():
            np.testing.assert_allclose(model(x).numpy(), panns_logits(sd, x, 11).numpy(), atol=1e-5)
        recorded = json.loads((tmp_path / "home" / "pretrained" / "panns-leenet11" / "sources.json").read_text())
        assert "LeeNet11_mAP=0.266.pth" in recorded
    finally:
        server.close()


@pytest.mark.parametrize("last", ["pad", "drop"])
def test_evaluate_and_tag_score_unpadded_windows_alike(tmp_path, last):
    """The one scoring path for a whole-clip model: `evaluate` (store) and `tag` (files,
    in decoding workers) give the same clip scores, from windows that are never padded."""
    import soundfile as sf

    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.data import prepare_csv
    from samplecnn.evaluation import evaluate
    from samplecnn.metrics import aggregate

    tags = ["a", "b", "c"]
    model = _randomize_bn(create_model("leenet11", tags=tags, sample_rate=8000, input_samples=729,
                                       width=0.25, seed=8))
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(9)
    lines, clips = ["path,tags,split"], {}
    for i, n in enumerate([400, 729, 2000, 3001]):
        x = (np.rint(rng.uniform(-0.5, 0.5, n) * 32767) / 32767).astype(np.float32)
        sf.write(root / f"c{i}.wav", x, 8000, subtype="FLOAT")
        lines.append(f"c{i}.wav,{tags[i % 3]},test")
        clips[f"c{i}"] = x
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    store = prepare_csv(root, tmp_path / "store", sample_rate=8000, min_samples=0, workers=1).store
    ev = evaluate(ckpt, store, "test", last=last, batch_size=3)
    tagger = Tagger.from_checkpoint(ckpt, batch_size=2)
    records = {r.path.rsplit("/", 1)[-1][:-4]: r.record
               for r in tagger.tag_files(sorted(str(p) for p in root.glob("*.wav")), last=last, workers=1)}
    for clip_id, scores in zip(ev.clip_ids, ev.clip_scores):
        x = clips[str(clip_id)]
        ends = range(729, len(x) + (729 if last == "pad" else 1), 729)
        wins = [x[e - 729: e] for e in ends] or [x]
        with torch.no_grad():
            logits = np.concatenate([model(torch.from_numpy(w)[None]).numpy() for w in wins])
        np.testing.assert_allclose(scores, aggregate(logits, "mean"), atol=1e-5)
        rec = records[str(clip_id)]
        assert rec["segments"] == len(wins)
        np.testing.assert_allclose([rec["tags"][t] for t in tags], scores, atol=2e-6)


@pytest.mark.slow
def test_leenet11_trains_with_the_existing_recipes(tmp_path):
    from samplecnn.training import train
    from training_helpers import make_learnable_store, tiny_config

    store = make_learnable_store(tmp_path, n_clips=12, splits=(8, 2, 2))
    cfg = tiny_config(store, tmp_path / "run", model={"name": "leenet11", "input_samples": 729, "width": 0.125},
                      trainer={"max_epochs": 1})
    cfg["model"].pop("n")
    res = train(cfg, log=lambda *a: None)
    model = load_model(res.last_checkpoint)
    assert model.config.arch == "leenet" and model.config.sample_rate == 8000
    assert model.config.whole_clip and res.global_step > 0


def test_cluster_engine_rows_carry_unpadded_windows(tmp_path):
    """The Ray engine's decode task and scoring actor (called in-process here) split a
    whole-clip model's flat windows by the grid's lengths: the same records as `tag`."""
    import soundfile as sf

    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.options import ScoringOptions
    from samplecnn.paths import escape_path
    from samplecnn.tagging.ray_engine import _decode_row, _Scorer

    model = _randomize_bn(create_model("leenet11", tags=["a", "b"], sample_rate=8000, input_samples=729,
                                       width=0.25, seed=10))
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    paths = []
    for i, n in enumerate([300, 2000]):
        paths.append(str(tmp_path / f"c{i}.wav"))
        sf.write(paths[-1], np.random.default_rng(i).uniform(-0.5, 0.5, n).astype(np.float32), 8000,
                 subtype="FLOAT")
    scorer = _Scorer(str(ckpt), ScoringOptions(), "cpu", 1, 2)
    rows = [_decode_row({"path": escape_path(p)}, sample_rate=8000, grid=scorer.grid) for p in paths]
    records = [json.loads(r) for r in scorer({k: [r[k] for r in rows] for k in rows[0]})["record"]]
    tagger = Tagger.from_checkpoint(ckpt)
    for p, rec in zip(paths, records):
        want = tagger.tag(p)
        assert rec["segments"] == want["segments"] and rec["segments"] in (1, 3)
        np.testing.assert_allclose([rec["tags"][t] for t in "ab"], [want["tags"][t] for t in "ab"], atol=2e-6)
