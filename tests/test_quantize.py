"""int8 exports: accuracy against the fp32 twin of a model trained here, reproducibility,
metadata, calibration sources, and the int8 file in evaluate, tag, the service and the
Ray engine's actors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from samplecnn.cli import main
from samplecnn.evaluation import evaluate
from samplecnn.export import export_onnx
from samplecnn.inference.onnx import export_graph, read_metadata, session
from samplecnn.quantize import QuantRecipe, calibration_windows, quantize_graph
from samplecnn.tagging import Tagger
from samplecnn.testing.datasets import write_audio
from training_helpers import TAGS, clip_audio, make_learnable_store

SR = 8000


def _train(store: Path, steps: int = 150):
    """A tiny sample-level model (3^5 over 729 samples, width 1/8) fitted to the store's
    train split: Adam on random crops, one thread (seconds)."""
    import torch

    from samplecnn.data import SegmentStore
    from samplecnn.models import create_model

    st = SegmentStore(store)
    train = st.split_indices("train")
    clips = [st.clip_float(c) for c in train]
    labels = torch.tensor(st.labels[train], dtype=torch.float32)
    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125, tags=list(TAGS),
                         sample_rate=SR, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spinning threads cost more than they give at this size
    # Dropout draws from torch's global RNG: a forked, seeded one makes the model the same
    # whichever tests ran before in this worker.
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for _ in range(steps):
                idx = rng.integers(0, len(train), 32)
                x = np.stack([clips[i][s:s + 729] for i, s in zip(idx, rng.integers(0, 16000 - 729, 32))])
                logits = model(torch.from_numpy(x).unsqueeze(1))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on learnable data, its store and its fp32 export."""
    from samplecnn.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("q")
    store = make_learnable_store(tmp, n_clips=96, splits=(48, 16, 32))
    ckpt = str(save_checkpoint(tmp / "m.ckpt", _train(store)))
    fp32 = tmp / "m.onnx"
    assert main(["export", ckpt, "--onnx", str(fp32)]) == 0
    return {"store": store, "ckpt": ckpt, "fp32": fp32, "tmp": tmp}


def _export_out(trained, capsys, *extra):
    out = trained["tmp"] / f"x{len(extra)}.onnx"
    code = main(["export", trained["ckpt"], "--onnx", str(out), "--int8", "--calibration",
                 str(trained["store"]), "--calibration-windows", "32", *extra])
    return code, out, capsys.readouterr()


def test_int8_keeps_the_fp32_twins_accuracy_and_a_broken_calibration_does_not(trained, tmp_path, capsys):
    code, int8, out = _export_out(trained, capsys)
    assert code == 0, out.err
    # The export reports its checks against fp32: score difference and validation ROC-AUC.
    assert "int8 vs fp32 max abs score diff" in out.out and "valid ROC-AUC fp32" in out.out
    ref = evaluate(trained["fp32"], trained["store"], "test")
    assert ref.roc_auc > 0.8, ref.metrics.rows()  # a model worth quantizing
    got = evaluate(int8, trained["store"], "test")
    assert got.clip_ids.tolist() == ref.clip_ids.tolist() and got.n_segments == ref.n_segments
    assert abs(got.roc_auc - ref.roc_auc) <= 0.01, (got.roc_auc, ref.roc_auc)
    # A tiny 1/8-width model: most clip scores move by a few thousandths, the worst by
    # several hundredths (0.058 here); a broken calibration moves them by about 0.5.
    diff = np.abs(got.clip_scores - ref.clip_scores)
    assert diff.mean() <= 0.01 and diff.max() <= 0.1, (diff.mean(), diff.max())
    # The checkpoint's own evaluation is the fp32 file's (one scoring path).
    np.testing.assert_allclose(evaluate(trained["ckpt"], trained["store"], "test").clip_scores,
                               ref.clip_scores, atol=1e-5)
    # Control: ranges calibrated on near-silence clip every real activation; the same
    # checks must see it.
    from samplecnn.checkpoint import load_model

    graph = export_graph(load_model(trained["ckpt"]))
    quiet = (1e-4 * np.random.default_rng(0).standard_normal((32, 729))).astype(np.float32)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(quantize_graph(graph, quiet, QuantRecipe(method="minmax")))
    broken = evaluate(bad, trained["store"], "test")
    bad_diff = np.abs(broken.clip_scores - ref.clip_scores)
    assert bad_diff.mean() > 0.01 or bad_diff.max() > 0.1 or abs(broken.roc_auc - ref.roc_auc) > 0.01


def test_export_is_reproducible_and_carries_the_fp32_metadata(trained, capsys):
    _, first, _ = _export_out(trained, capsys)
    data = first.read_bytes()
    _, again, _ = _export_out(trained, capsys)
    assert again.read_bytes() == data  # same source, count, seed: same file
    meta = read_metadata(first)
    fp32 = read_metadata(trained["fp32"])
    assert meta["precision"] == "int8" and fp32["precision"] == "fp32"
    for key in ("tags", "sample_rate", "input_samples", "model_config", "graph"):
        assert meta[key] == fp32[key]
    q = meta["quantization"]
    assert q["method"] == "percentile" and q["windows"] == 32 and q["activations"] == "uint8"
    assert q["calibration_source"] == str(trained["store"]) and q["fp32_nodes"] == []
    assert q["reduce_range"] is True and q["weights"] == "int8 per channel (7-bit)"
    assert q["seed"] == 0 and q["format"] == "QDQ"
    ops = {n.op_type for n in onnx.load(str(first)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Another seed draws other windows.
    code, other, _ = _export_out(trained, capsys, "--seed", "1")
    assert code == 0 and other.read_bytes() != data


def test_every_samplecnn_metadata_entry_is_copied(trained):
    """Thresholds (and any later entry) travel into the int8 file."""
    from samplecnn.checkpoint import load_model

    proto = onnx.load_from_string(export_graph(load_model(trained["ckpt"])))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "samplecnn.thresholds", json.dumps([0.5, 0.25, 0.75, 0.5])
    windows = calibration_windows(trained["store"], SR, 729, n=16).windows
    int8 = onnx.load_from_string(quantize_graph(proto.SerializeToString(), windows, QuantRecipe()))
    props = {p.key: p.value for p in int8.metadata_props}
    for p in proto.metadata_props:
        assert props[p.key] == p.value
    assert props["samplecnn.precision"] == "int8"
    assert read_metadata(int8.SerializeToString())["thresholds"]["values"] == [0.5, 0.25, 0.75, 0.5]
    with pytest.raises(ValueError, match="already int8"):  # never quantized twice
        quantize_graph(int8.SerializeToString(), windows, QuantRecipe())


def test_recipe_options_reach_the_graph(trained, capsys):
    code, out, _ = _export_out(trained, capsys, "--keep-fp32", "frontend,output",
                               "--activations", "int8", "--calibration-method", "minmax",
                               "--weight-bits", "8")
    assert code == 0
    q = read_metadata(out)["quantization"]
    assert q["keep_fp32"] == ["frontend", "output"] and q["activations"] == "int8"
    assert q["method"] == "minmax" and q["reduce_range"] is False
    proto = onnx.load(str(out))
    kept = [n for n in proto.graph.node if n.name in q["fp32_nodes"]]
    assert {n.op_type for n in kept} >= {"Conv", "Gemm"}
    # A kept node computes in fp32: float weights of its own, no quantized input.
    floats = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    q_out = {o for n in proto.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    for n in (n for n in kept if n.op_type in ("Conv", "Gemm")):
        assert n.input[1] in floats and not set(n.input) & q_out
    # int8 activations: the quantized tensors are int8.
    zps = [i for i in proto.graph.initializer if i.name.endswith("_zero_point")]
    assert zps and any(z.data_type == onnx.TensorProto.INT8 for z in zps)
    # The default: the whole network in int8, the waveform quantized at the input.
    code, out, _ = _export_out(trained, capsys)
    assert code == 0 and read_metadata(out)["quantization"]["fp32_nodes"] == []
    nodes = onnx.load(str(out)).graph.node
    made_by = {o: n.op_type for n in nodes for o in n.output}
    (front,) = [n for n in nodes if n.op_type == "Conv" and n.name.startswith("/m/frontend/")]
    assert made_by[front.input[0]] == made_by[front.input[1]] == "DequantizeLinear"


def test_calibration_from_an_audio_folder_reports_bad_files(trained, tmp_path, capsys):
    rng = np.random.default_rng(3)
    folder = tmp_path / "music"
    for k in range(3):
        write_audio(folder / f"{k}.wav", clip_audio(np.array([1, 0, 1, 0]), 1.0, 22050, rng), 22050)
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    cal = calibration_windows(folder, SR, 729, n=12, seed=0)
    assert cal.kind == "audio" and cal.files == 3 and cal.windows.shape == (12, 729)
    assert len(cal.failures) == 1 and "broken.wav" in cal.failures[0]
    # Decoded at the model's rate on the window grid: each window is a slice of the
    # file's decode.
    from samplecnn.audio import load_audio

    decoded = [load_audio(folder / f"{k}.wav", SR).samples for k in range(3)]
    for w in cal.windows[:4]:
        assert any(np.allclose(w, d[s:s + 729], atol=1e-6)
                   for d in decoded for s in range(0, len(d) - 728, 729))
    out = tmp_path / "f.onnx"
    assert main(["export", trained["ckpt"], "--onnx", str(out), "--int8", "--calibration",
                 str(folder), "--calibration-windows", "12"]) == 0
    cap = capsys.readouterr()
    assert "broken.wav" in cap.err and "12 windows from 3 file(s)" in cap.out
    assert "ROC-AUC" not in cap.out  # no store, no validation split
    assert read_metadata(out)["quantization"]["calibration_source"] == str(folder)


def test_store_at_another_rate_and_bad_options_are_one_line_errors(trained, tmp_path, capsys):
    with pytest.raises(ValueError, match="16000 Hz"):
        calibration_windows(trained["store"], 16000, 729)
    cases = [
        (["--int8"], "--calibration SOURCE"),
        (["--calibration", str(trained["store"])], "for --int8"),
        (["--int8", "--calibration", str(tmp_path / "nowhere")], "no such store"),
        (["--int8", "--calibration", str(trained["store"]), "--calibration-windows", "0"],
         "positive integer"),
        (["--int8", "--calibration", str(trained["store"]), "--keep-fp32", "head"], "unknown fp32 part"),
    ]
    for extra, msg in cases:
        assert main(["export", trained["ckpt"], "--onnx", str(tmp_path / "e.onnx"), *extra]) == 2
        assert msg in capsys.readouterr().err
    # An ONNX file is not exported (or quantized) again.
    assert main(["export", str(trained["fp32"]), "--onnx", str(tmp_path / "e.onnx"), "--int8",
                 "--calibration", str(trained["store"])]) == 2
    assert "already an ONNX file" in capsys.readouterr().err
    assert not (tmp_path / "e.onnx").exists()


def test_evaluate_cli_takes_onnx_files(trained, capsys):
    res = []
    for path in (trained["fp32"], trained["ckpt"]):
        assert main(["evaluate", str(path), "--data", str(trained["store"]), "--split", "valid",
                     "--hop", "0.05", "--json"]) == 0
        res.append(json.loads(capsys.readouterr().out))
    assert res[0]["n_segments"] == res[1]["n_segments"] > 16 * 21  # the hop was applied
    assert res[0]["macro_roc_auc"] == pytest.approx(res[1]["macro_roc_auc"], abs=1e-6)
    assert main(["evaluate", str(trained["fp32"]), "--data", str(trained["store"]),
                 "--backend", "torch"]) == 2
    assert "onnxruntime backend" in capsys.readouterr().err


def test_tag_serve_and_ray_actor_use_the_int8_file_as_it_is(trained, tmp_path):
    int8 = tmp_path / "t.int8.onnx"
    export_onnx(trained["ckpt"], int8, int8=QuantRecipe(windows=32),
                calibration=trained["store"])
    rng = np.random.default_rng(7)
    files = []
    for k, labels in enumerate(([1, 0, 0, 1], [0, 1, 1, 0])):
        files.append(str(write_audio(tmp_path / f"c{k}.wav",
                                     clip_audio(np.array(labels), 2.0, SR, rng), SR)))
    out8, out32 = tmp_path / "t8.json", tmp_path / "t32.json"
    assert main(["tag", str(int8), *files, "-o", str(out8), "--workers", "0", "-q"]) == 0
    assert main(["tag", str(trained["fp32"]), *files, "-o", str(out32), "--workers", "0", "-q"]) == 0
    r8, r32 = json.loads(out8.read_text()), json.loads(out32.read_text())
    for a, b in zip(r8, r32):
        assert a["error"] is None and a["segments"] == b["segments"]
        assert a["tags"] == pytest.approx(b["tags"], abs=0.1)  # the clip-score bound of the accuracy test
        assert a["tags"] != b["tags"]  # really the int8 graph, not the fp32 one
    # The service answers what the CLI wrote.
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import running

    with running(Tagger.load(int8), max_wait_ms=20) as srv:
        resp = srv.post("/v1/tag", "c0.wav", Path(files[0]).read_bytes())
        assert resp.status_code == 200, resp.text
        assert resp.json()["tags"] == pytest.approx(r8[0]["tags"], abs=1e-6)
    assert httpx
    # A Ray scoring actor gets the file's bytes as they are (no re-export, no torch).
    from samplecnn.paths import escape_path
    from samplecnn.tagging.ray_engine import _decode_row, _Scorer

    from samplecnn.options import ScoringOptions

    scorer = _Scorer(str(int8), ScoringOptions(top_k=3), "cpu", 1, 4, graph=int8.read_bytes())
    rows = [_decode_row({"path": escape_path(p)}, sample_rate=SR,
                        grid=scorer.tagger.grid(scorer.options)) for p in files]
    got = scorer({k: [r[k] for r in rows] for k in rows[0]})
    for rec, ref in zip(got["record"], r8):
        assert json.loads(rec)["tags"] == pytest.approx(ref["tags"], abs=1e-6)


def test_bench_infer_int8(capsys):
    assert main(["bench", "infer", "--model", "samplecnn_small", "--precision", "int8", "--batch", "2",
                 "--iters", "1", "--warmup", "0", "--calibration-windows", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["precision"] == "int8" and res["module"] == "OrtRunner" and res["segments_per_s"] > 0
    assert main(["bench", "infer", "--model", "samplecnn_small", "--precision", "int8",
                 "--backend", "torch"]) == 2


def test_embed_with_an_int8_file_keeps_the_features_outputs(trained, tmp_path, capsys):
    wav = write_audio(tmp_path / "a.wav", clip_audio(np.array([1, 1, 0, 0]), 1.0, SR,
                                                     np.random.default_rng(0)), SR)
    code, int8, out = _export_out(trained, capsys)
    assert code == 0, out.err
    meta = read_metadata(int8)
    assert meta["precision"] == "int8" and meta["layer_names"] == ["features"]
    assert meta["outputs"] == read_metadata(trained["fp32"])["outputs"]
    npz = {}
    for name, src in (("fp32", trained["fp32"]), ("int8", int8)):
        npz[name] = tmp_path / f"{name}.npz"
        assert main(["embed", str(src), str(wav), "-o", str(npz[name]), "--workers", "0"]) == 0
    with np.load(npz["fp32"]) as f, np.load(npz["int8"]) as q:
        a, b = f["window_embeddings"], q["window_embeddings"]
        assert a.shape == b.shape and a.shape[1] == 64
        # int8 rounding: close to fp32, not equal (a loose bound: calibration moves it).
        rel = np.linalg.norm(a - b) / np.linalg.norm(a)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert 0 < rel <= 0.25 and cos.min() >= 0.95, (rel, cos.min())
    capsys.readouterr()
    assert main(["embed", str(int8), str(wav), "-o", str(tmp_path / "e.npz"), "--layer", "block2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds the embeddings of layer features only" in err
    assert not (tmp_path / "e.npz").exists()
