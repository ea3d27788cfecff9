"""Decision thresholds: the decision, the fit (checked by hand), their storage in
checkpoints and ONNX metadata, and `labels` in the Tagger's records."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samplecnn.checkpoint import load_model, read_checkpoint_info, save_checkpoint, set_thresholds
from samplecnn.models import create_model
from samplecnn.options import ScoringOptions
from samplecnn.tagging import Tagger
from samplecnn.thresholds import (FALLBACK_THRESHOLD, Thresholds, decide, decision_metrics,
                                  fit_thresholds, parse_objective)

TAGS = ["rock", "piano", "quiet"]
SR = 16000
WIN = 19683


# ---------------------------------------------------------------------------- decide
def test_decide_orders_by_score_and_handles_scalar_and_at_least_one():
    s = np.array([0.2, 0.9, 0.5, 0.7])
    assert decide(s, np.array([0.1, 0.95, 0.5, 0.6])) == [3, 2, 0]  # 0.5 >= 0.5 passes
    assert decide(s, 0.5) == [1, 3, 2]
    assert decide(s, 0.95) == []
    assert decide(s, 0.95, at_least_one=True) == [1]
    assert decide(np.array([0.4, 0.4, 0.1]), 0.3) == [0, 1]  # ties keep tag order


# ---------------------------------------------------------------------- fit by hand
# Tag "a": scores 0.9 0.8 0.7 0.6 0.3 0.2, truth 1 0 1 1 0 0.
#   t=0.9: P=1   R=1/3 F1=0.5;  t=0.8: P=1/2 R=1/3 F1=0.4;  t=0.7: P=2/3 R=2/3 F1=2/3
#   t=0.6: P=3/4 R=1   F1=6/7 (best);  t=0.3: P=3/5 R=1 F1=3/4;  t=0.2: P=1/2 R=1 F1=2/3
# Tag "b": no positive clip -> unfitted.  Tag "c": truth 1 0 0 1 0 0 with scores
#   0.9 0.5 0.45 0.3 0.1 0.05: t=0.9 F1=2/3 ties t=0.3 (P=1/2 R=1 F1=2/3): the lower wins.
# Tag "d": every clip positive -> unfitted.
SCORES = np.array([[0.9, 0.1, 0.9, 0.5], [0.8, 0.2, 0.5, 0.6], [0.7, 0.3, 0.45, 0.7],
                   [0.6, 0.4, 0.3, 0.8], [0.3, 0.5, 0.1, 0.9], [0.2, 0.6, 0.05, 0.95]])
TRUTH = np.array([[1, 0, 1, 1], [0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]])


def test_f1_fit_matches_the_hand_computation():
    th = fit_thresholds(SCORES, TRUTH, ["a", "b", "c", "d"], split="valid", store="fp")
    assert th.values.dtype == np.float32
    assert th.values[0] == pytest.approx(0.6, abs=1e-7) and th.values[0] <= 0.6
    assert th.values[2] == pytest.approx(0.3, abs=1e-7) and th.values[2] <= 0.3
    assert th.unfitted == {"b": "no positive clip", "d": "no negative clip"}
    assert th.values[1] == th.values[3] == FALLBACK_THRESHOLD
    assert (th.objective, th.split, th.store) == ("f1", "valid", "fp")
    m = decision_metrics(SCORES, TRUTH, th.values, th.tags)
    assert m.f1[0] == pytest.approx(6 / 7) and m.precision[0] == pytest.approx(0.75)
    assert m.recall[0] == 1.0 and m.f1[2] == pytest.approx(2 / 3)
    assert np.isnan(m.f1[1]) and m.precision[1] == 0.0  # never decided, no positive
    # "d" at 0.5: 0.5 0.6 0.7 0.8 0.9 0.95 all pass: tp 6 -> f1 1
    assert m.f1[3] == 1.0
    assert m.macro_f1 == pytest.approx((6 / 7 + 2 / 3 + 1.0) / 3)
    # pooled: a tp3 fp1; b tp0 fp2 (0.5, 0.6 >= 0.5); c tp2 (0.9, 0.3) fp2 (0.5, 0.45); d tp6
    tp, fp, fn = 3 + 0 + 2 + 6, 1 + 2 + 2 + 0, 0
    assert (int(m.tp.sum()), int(m.fp.sum()), int(m.fn.sum())) == (tp, fp, fn)
    assert m.micro_f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_target_precision_objective():
    th = fit_thresholds(SCORES[:, :1], TRUTH[:, :1], ["a"], "precision:0.7")
    assert th.values[0] == pytest.approx(0.6, abs=1e-7) and th.objective == "precision:0.7"
    th = fit_thresholds(SCORES[:, :1], TRUTH[:, :1], ["a"], "precision:0.8")
    assert th.values[0] == pytest.approx(0.9, abs=1e-7)
    # "c" at P=1 reaches 0.9 only; nothing reaches more than 1
    th = fit_thresholds(SCORES[:, 2:3], TRUTH[:, 2:3], ["c"], "precision:1")
    assert th.values[0] == pytest.approx(0.9, abs=1e-7) and not th.unfitted
    labels = np.array([[0], [1], [0]])
    th = fit_thresholds(np.array([[0.9], [0.5], [0.1]]), labels, ["x"], "precision:0.9")
    assert th.unfitted == {"x": "precision 0.9 never reached"}


@pytest.mark.parametrize("bad", ["f2", "precision", "precision:1.5", "precision:0", "precision:x"])
def test_bad_objective_is_one_line(bad):
    with pytest.raises(ValueError, match="objective|precision"):
        parse_objective(bad)


def test_fitted_threshold_is_rounded_down_so_its_clip_passes():
    s = np.array([[0.1], [0.30000001192092896 - 1e-12], [0.7]])  # float32 would round 0.3 - eps up
    th = fit_thresholds(s, np.array([[0], [1], [1]]), ["x"])
    assert float(th.values[0]) <= s[1, 0]
    assert decide(s[1], th.values) == [0]


@pytest.mark.parametrize("kw", [{"threshold": float("nan")}, {"threshold": 1.5}, {"threshold": -0.1},
                                {"threshold": "0.5"}, {"at_least_one": "yes"}])
def test_scoring_options_validate_decisions(kw):
    with pytest.raises(ValueError, match="threshold|at-least-one"):
        ScoringOptions(**kw)


def test_scoring_options_accept_decisions():
    o = ScoringOptions(threshold=1, at_least_one=True)
    assert o.threshold == 1.0 and isinstance(o.threshold, float) and o.at_least_one
    assert o.to_dict()["threshold"] == 1.0


# ------------------------------------------------------------------------ storage
@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A checkpoint, clip scores of one array, and a copy with thresholds chosen around
    them: rock decided (threshold below its score), piano not, quiet at its score."""
    tmp = tmp_path_factory.mktemp("th")
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=0).eval()
    plain = save_checkpoint(tmp / "plain.ckpt", model)
    x = (0.3 * np.random.default_rng(0).standard_normal(int(2.5 * WIN))).astype(np.float32)
    scores = np.array([Tagger.from_checkpoint(plain).tag(x, sample_rate=SR)["tags"][t] for t in TAGS])
    values = np.clip(scores + np.array([-0.05, 0.05, -0.01]), 0, 1)
    th = Thresholds(values, TAGS, "f1", "valid", "abc123", {"piano": "no positive clip"})
    fitted = set_thresholds(plain, th, tmp / "fitted.ckpt")
    return {"plain": plain, "fitted": fitted, "x": x, "scores": scores, "th": th, "tmp": tmp}


def _expected(scores, limits):
    return [TAGS[i] for i in np.argsort(-scores) if scores[i] >= limits[i]]


def test_checkpoint_carries_thresholds(stored):
    info = read_checkpoint_info(stored["fitted"])
    assert info["thresholds"]["objective"] == "f1" and info["thresholds"]["store"] == "abc123"
    assert "thresholds" not in read_checkpoint_info(stored["plain"])
    model = load_model(stored["fitted"])
    assert model.thresholds.unfitted == {"piano": "no positive clip"}
    np.testing.assert_array_equal(model.thresholds.values, stored["th"].values)
    # a checkpoint saved from a loaded model keeps them
    again = save_checkpoint(stored["tmp"] / "again.ckpt", model)
    assert read_checkpoint_info(again)["thresholds"] == info["thresholds"]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "plain"])
def test_tagger_decides_with_stored_thresholds(stored, backend):
    tagger = Tagger.load(stored["fitted"], backend=backend)
    assert tagger.thresholds.dtype == np.float32 and tagger.thresholds.shape == (3,)
    rec = tagger.tag(stored["x"], sample_rate=SR)
    assert rec["labels"] == _expected(stored["scores"], stored["th"].values)
    assert sorted(rec["labels"]) == ["quiet", "rock"]


def test_labels_none_without_thresholds_and_override(stored):
    tagger = Tagger.from_checkpoint(stored["plain"])
    assert tagger.thresholds is None
    rec = tagger.tag(stored["x"], sample_rate=SR)
    assert "labels" in rec and rec["labels"] is None
    s = stored["scores"]
    mid = float(np.sort(s)[1])  # two tags at or above
    assert tagger.tag(stored["x"], sample_rate=SR, threshold=mid)["labels"] == _expected(s, [mid] * 3)
    assert tagger.tag(stored["x"], sample_rate=SR, threshold=1.0)["labels"] == []
    top = TAGS[int(np.argmax(s))]
    assert tagger.tag(stored["x"], sample_rate=SR, threshold=1.0, at_least_one=True)["labels"] == [top]
    with pytest.raises(ValueError, match="threshold"):
        tagger.tag(stored["x"], sample_rate=SR, threshold=2.0)
    # the override wins over stored thresholds
    fitted = Tagger.from_checkpoint(stored["fitted"])
    assert fitted.tag(stored["x"], sample_rate=SR, threshold=0.0)["labels"] == _expected(s, [0] * 3)


def test_tag_files_pass_decisions_through(stored, tmp_path):
    import soundfile as sf

    good, bad = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(good, stored["x"], SR)
    bad.write_bytes(b"not audio")
    tagger = Tagger.from_checkpoint(stored["fitted"])
    recs = {r.path: r.record for r in tagger.tag_files([str(good), str(bad)])}
    assert recs[str(good)]["labels"] == _expected(stored["scores"], stored["th"].values)
    assert recs[str(bad)]["labels"] is None and recs[str(bad)]["error"]
    recs = [r.record for r in tagger.tag_files([str(good)], threshold=1.0, at_least_one=True)]
    assert recs[0]["labels"] == [TAGS[int(np.argmax(stored["scores"]))]]


def test_onnx_export_carries_thresholds(stored):
    import onnx

    from samplecnn.export import export_onnx
    from samplecnn.inference.onnx import cached_graph, read_metadata
    from samplecnn.inference.runners import OrtRunner

    out = stored["tmp"] / "m.onnx"
    export_onnx(stored["fitted"], out)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    # what a reader without samplecnn sees: a JSON list in tag order beside the tags
    assert json.loads(props["samplecnn.thresholds"]) == pytest.approx(stored["th"].values.tolist())
    assert json.loads(props["samplecnn.thresholds_fit"])["split"] == "valid"
    assert read_metadata(out)["thresholds"]["store"] == "abc123"
    tagger = Tagger.load(out)
    np.testing.assert_array_equal(tagger.thresholds, stored["th"].values)
    assert tagger.threshold_info.unfitted == {"piano": "no positive clip"}
    assert tagger.tag(stored["x"], sample_rate=SR)["labels"] == _expected(stored["scores"], stored["th"].values)
    # the cached export (the Ray actors' graph) differs with and without thresholds
    with_th, without = load_model(stored["fitted"]), load_model(stored["plain"])
    g1, g0 = cached_graph(with_th), cached_graph(without)
    assert g1 != g0
    assert OrtRunner.from_file(g1.read_bytes()).thresholds is not None
    assert OrtRunner.from_file(g0.read_bytes()).thresholds is None
    assert read_metadata(out.read_bytes())["thresholds"]["objective"] == "f1"


def test_broken_stored_thresholds_are_one_line(stored, tmp_path):
    ckpt = torch.load(stored["fitted"], weights_only=True)
    ckpt["samplecnn"]["thresholds"]["values"] = [0.5, 0.5]
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"bad\.ckpt: broken stored thresholds"):
        load_model(tmp_path / "bad.ckpt")
    ckpt["samplecnn"]["thresholds"]["values"] = [0.5, 0.5, 7.0]
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="broken stored thresholds"):
        load_model(tmp_path / "bad.ckpt")


def test_cli_tag_labels_threshold_and_note(stored, tmp_path, capsys):
    import soundfile as sf

    from samplecnn.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, stored["x"], SR)
    s = stored["scores"]
    assert main(["tag", str(stored["plain"]), str(wav), "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["labels"] is None
    notes = [line for line in out.err.splitlines() if "decision thresholds" in line]
    assert len(notes) == 1 and "samplecnn thresholds" in notes[0]
    assert main(["tag", str(stored["plain"]), str(wav), "--workers", "0", "--threshold", "0"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["labels"] == _expected(s, [0] * 3) and out.err == ""
    assert main(["tag", str(stored["plain"]), str(wav), "--workers", "0", "--threshold", "1",
                 "--at-least-one"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["labels"] == [TAGS[int(np.argmax(s))]]
    assert main(["tag", str(stored["fitted"]), str(wav), "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["labels"] == _expected(s, stored["th"].values) and out.err == ""
    assert main(["tag", str(stored["plain"]), str(wav), "--threshold", "1.5"]) == 2
    assert "threshold" in capsys.readouterr().err


def test_every_output_format_carries_labels(stored, tmp_path, capsys):
    import csv

    import soundfile as sf

    from samplecnn.cli import main
    from samplecnn.tagging.parquet import read_output

    wav, bad = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(wav, stored["x"], SR)
    bad.write_bytes(b"not audio")
    want = _expected(stored["scores"], stored["th"].values)
    assert len(want) >= 2  # the CSV cell joins several
    ck = str(stored["fitted"])
    assert main(["tag", ck, str(wav), str(bad), "--format", "jsonl", "-o", str(tmp_path / "o.jsonl"),
                 "--workers", "0", "-q"]) == 1
    recs = {r["path"]: r for r in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert recs[str(wav)]["labels"] == want and recs[str(bad)]["labels"] is None
    assert main(["tag", ck, str(wav), str(bad), "--format", "csv", "-o", str(tmp_path / "o.csv"),
                 "--workers", "0", "-q"]) == 1
    with open(tmp_path / "o.csv", newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert rows[str(wav)]["labels"] == ";".join(want) and rows[str(bad)]["labels"] == ""
    assert main(["tag", ck, str(wav), str(bad), "--format", "parquet", "-o", str(tmp_path / "pq"),
                 "--workers", "0", "-q"]) == 1
    table = read_output(tmp_path / "pq").to_pylist()
    by_path = {r["path"]: r for r in table}
    assert by_path[str(wav)]["labels"] == want and by_path[str(bad)]["labels"] is None
    # --threshold 1 decides nothing: an empty list, not null
    assert main(["tag", ck, str(wav), "--format", "parquet", "-o", str(tmp_path / "pq1"),
                 "--workers", "0", "--threshold", "1"]) == 0
    assert read_output(tmp_path / "pq1").to_pylist()[0]["labels"] == []
    capsys.readouterr()
