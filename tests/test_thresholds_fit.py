"""Thresholds fitted on a store split through the one scoring path: `samplecnn
thresholds`, F1 in `evaluate`, and `tag`'s labels agreeing with `evaluate`'s F1."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from samplecnn.checkpoint import load_model, read_checkpoint_info, save_checkpoint
from samplecnn.cli import main
from samplecnn.data import SegmentStore
from samplecnn.evaluation import evaluate, fit_checkpoint_thresholds
from samplecnn.models import create_model
from samplecnn.thresholds import decision_metrics, fit_thresholds
from training_helpers import TAGS, make_learnable_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # No test clip has "clicks": a tag without positives on the test split.
    return make_learnable_store(tmp_path_factory.mktemp("fit"), test_missing_tag="clicks")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125,
                         tags=list(TAGS), sample_rate=8000, seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("fitm") / "m.ckpt", model)


def test_fit_uses_evaluates_clip_scores(store, ckpt):
    fit = fit_checkpoint_thresholds(ckpt, store, "valid")
    ev = evaluate(ckpt, store, "valid")
    expected = fit_thresholds(ev.clip_scores, ev.labels, ev.tags)
    np.testing.assert_array_equal(fit.thresholds.values, expected.values)
    assert fit.thresholds.split == "valid" and fit.thresholds.objective == "f1"
    assert fit.thresholds.store == SegmentStore(store).meta["inputs_fingerprint"]
    assert fit.n_clips == len(ev.clip_ids)
    # the split's F1 at the fitted thresholds is what the fit maximised: no single other
    # threshold per tag does better
    for j, t in enumerate(ev.tags):
        if t in fit.thresholds.unfitted:
            continue
        best = fit.decisions.f1[j]
        for cand in np.unique(ev.clip_scores[:, j]):
            other = decision_metrics(ev.clip_scores[:, j:j + 1], ev.labels[:, j:j + 1], cand, [t])
            assert other.f1[0] <= best + 1e-12


def test_tags_the_store_lacks_stay_unfitted(store, tmp_path):
    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125,
                         tags=["high", "unknown tag"], sample_rate=8000, seed=0)
    ck = save_checkpoint(tmp_path / "m.ckpt", model)
    fit = fit_checkpoint_thresholds(ck, store, "valid")
    assert fit.thresholds.unfitted["unknown tag"] == "not in the store"
    assert fit.thresholds.values[1] == fit.thresholds.fallback
    assert fit.thresholds.tags == ["high", "unknown tag"]


def test_cli_thresholds_writes_a_checkpoint_that_decides(store, ckpt, tmp_path, capsys):
    out = tmp_path / "fitted.ckpt"
    assert main(["thresholds", str(ckpt), "--data", str(store), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "thresh" in text.out and "macro F1" in text.out and "written to" in text.out
    assert "warning" not in text.err
    info = read_checkpoint_info(out)
    assert info["thresholds"]["split"] == "valid"
    assert "thresholds" not in read_checkpoint_info(ckpt)  # the input is left alone
    model = load_model(out)
    assert model.thresholds.values.shape == (len(TAGS),)
    # fitting on test warns, and an objective is checked before any work
    assert main(["thresholds", str(ckpt), "--data", str(store), "--split", "test",
                 "--objective", "precision:0.6", "--out", str(tmp_path / "t.ckpt"), "--json"]) == 0
    text = capsys.readouterr()
    assert "test figures optimistic" in text.err
    d = json.loads(text.out)
    assert d["objective"] == "precision:0.6" and d["unfitted"]["clicks"] == "no positive clip"
    assert main(["thresholds", str(ckpt), "--data", str(store), "--objective", "f2",
                 "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "objective" in capsys.readouterr().err
    assert main(["thresholds", str(ckpt), "--data", str(store), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "samplecnn export" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_evaluate_reports_f1_at_stored_thresholds(store, ckpt, tmp_path, capsys):
    fitted = tmp_path / "fitted.ckpt"
    assert main(["thresholds", str(ckpt), "--data", str(store), "--out", str(fitted)]) == 0
    capsys.readouterr()
    ev = evaluate(fitted, store, "test")
    th = load_model(fitted).thresholds
    ref = decision_metrics(ev.clip_scores, ev.labels, th.values, ev.tags)
    assert ev.micro_f1 == pytest.approx(ref.micro_f1) and ev.macro_f1 == pytest.approx(ref.macro_f1)
    rows = {r["tag"]: r for r in ev.rows()}
    assert rows["clicks"]["f1"] is None and rows["clicks"]["threshold"] == pytest.approx(float(th.values[TAGS.index("clicks")]))
    paths = ev.write(tmp_path / "ev")
    d = json.loads(paths["json"].read_text())
    assert d["micro_f1"] == pytest.approx(ref.micro_f1) and "stored thresholds" in d["thresholds"]
    with open(paths["per_tag"], newline="") as f:
        per_tag = {r["tag"]: r for r in csv.DictReader(f)}
    j = TAGS.index("high")
    assert float(per_tag["high"]["f1"]) == pytest.approx(ref.f1[j], abs=1e-6)
    assert float(per_tag["high"]["precision"]) == pytest.approx(ref.precision[j], abs=1e-6)
    assert per_tag["clicks"]["f1"] == ""
    assert main(["evaluate", str(fitted), "--data", str(store)]) == 0
    out = capsys.readouterr().out
    assert "macro F1" in out and "micro F1" in out and "thresh" in out
    # one threshold for every tag
    ev5 = evaluate(fitted, store, "test", threshold=0.5)
    assert ev5.micro_f1 == pytest.approx(decision_metrics(ev.clip_scores, ev.labels, 0.5, ev.tags).micro_f1)


def test_evaluate_without_thresholds_says_why(store, ckpt, capsys):
    ev = evaluate(ckpt, store, "test")
    assert ev.macro_f1 is None and ev.micro_f1 is None
    d = ev.to_dict()
    assert d["macro_f1"] is None and all(r["f1"] is None and r["threshold"] is None for r in d["per_tag"])
    assert main(["evaluate", str(ckpt), "--data", str(store), "--json"]) == 0
    text = capsys.readouterr()
    assert json.loads(text.out)["micro_f1"] is None
    assert len(text.err.strip().splitlines()) == 1 and "samplecnn thresholds" in text.err


@pytest.mark.parametrize("last", ["drop", "pad"])
def test_tag_labels_on_the_test_files_agree_with_evaluate_f1(store, ckpt, tmp_path, capsys, last):
    """Done when: the labels `samplecnn tag` writes for the test split's own files give
    `evaluate`'s micro (and per-tag) F1, with the same scoring options on both sides."""
    fitted = tmp_path / "fitted.ckpt"
    assert main(["thresholds", str(ckpt), "--data", str(store), "--out", str(fitted), "--last", last]) == 0
    st = SegmentStore(store)
    test = st.split_indices("test")
    files = [st.source_path(int(c)) for c in test]
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(fitted), *files, "--format", "jsonl", "--output", str(out),
                 "--last", last, "--workers", "0"]) == 0
    capsys.readouterr()
    labels = {Path(r["path"]).resolve(): r["labels"] for r in map(json.loads, out.read_text().splitlines())}
    pred = np.array([[t in labels[Path(f).resolve()] for t in st.tags] for f in files])
    truth = st.labels[test].astype(bool)
    ev = evaluate(fitted, store, "test", last=last)
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    assert tp + fp > 0
    assert ev.micro_f1 == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert (pred & truth).sum(0).tolist() == ev.decisions.tp.tolist()
    assert (pred & ~truth).sum(0).tolist() == ev.decisions.fp.tolist()
