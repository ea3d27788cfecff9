"""Evaluation: a split lacking positives for a tag, tag matching, rate checks, plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samplecnn.checkpoint import save_checkpoint
from samplecnn.cli import main
from samplecnn.data import SegmentDataset, SegmentStore
from samplecnn.evaluation import evaluate, plot_training_curves
from samplecnn.models import create_model
from training_helpers import TAGS, make_learnable_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # No test clip has the tag "clicks".
    return make_learnable_store(tmp_path_factory.mktemp("ev"), test_missing_tag="clicks")


def _ckpt(path, tags=TAGS, sr=8000, seed=0):
    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125,
                         tags=list(tags), sample_rate=sr, seed=seed)
    return save_checkpoint(path, model), model


def test_split_without_positives_for_a_tag_is_reported_not_fatal(store, tmp_path, capsys):
    ckpt, _ = _ckpt(tmp_path / "m.ckpt")
    r = evaluate(ckpt, store, "test")
    assert r.metrics.excluded == ["clicks"]
    assert r.tags == list(TAGS) and np.isnan(r.metrics.roc_auc[TAGS.index("clicks")])
    assert np.isfinite(r.roc_auc) and np.isfinite(r.pr_auc)
    assert "excluded" in r.summary() and "clicks" in r.summary()
    assert main(["evaluate", str(ckpt), "--data", str(store), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "ROC-AUC " in out and "clicks" in out


def test_clip_scores_are_the_mean_of_every_segment(store, tmp_path):
    ckpt, model = _ckpt(tmp_path / "m.ckpt")
    r = evaluate(ckpt, store, "valid")
    st = SegmentStore(store)
    ds = SegmentDataset(st, "valid", 729, segments_per_clip=None)
    # Every full segment of each 2 s clip at 8 kHz: 16000 // 729 = 21.
    assert r.n_segments == len(ds) == 21 * len(st.split_indices("valid"))
    # Independent computation: clip by clip, loop over its segments.
    model.eval()
    with torch.no_grad():
        for k, c in enumerate(st.split_indices("valid")):
            x = st.clip_float(c)[: 21 * 729].reshape(21, 1, 729)
            expected = torch.sigmoid(model(torch.from_numpy(x))).mean(0).numpy()
            np.testing.assert_allclose(r.clip_scores[k], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(r.labels, st.labels[st.split_indices("valid")])
    # max aggregation is never below mean.
    r_max = evaluate(ckpt, store, "valid", aggregate="max")
    assert np.all(r_max.clip_scores >= r.clip_scores - 1e-9)


def test_split_where_no_tag_can_be_scored_is_one_line_exit_2(store, tmp_path, capsys):
    """Issue 19.11: every AUC undefined is an error, not a bare NaN and exit 0."""
    ckpt, _ = _ckpt(tmp_path / "m.ckpt", tags=("clicks",))  # no test clip has it
    with pytest.raises(ValueError, match="no tag can be scored"):
        evaluate(ckpt, store, "test")
    out = tmp_path / "out"
    assert main(["evaluate", str(ckpt), "--data", str(store), "--json", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and "no tag can be scored" in cap.err
    assert not (out / "metrics.json").exists()


def test_undefined_metrics_are_null_in_strict_json(store, tmp_path, capsys):
    from samplecnn.atomic import write_json
    from samplecnn.metrics import tag_metrics

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    m = tag_metrics(np.zeros((4, 2), bool), np.full((4, 2), 0.5, np.float32), ["a", "b"])
    d = m.to_dict()
    assert d["macro_roc_auc"] is None and d["macro_pr_auc"] is None
    write_json(tmp_path / "x.json", {"m": d, "loss": float("nan"), "v": [float("inf"), 1.5]})
    got = strict((tmp_path / "x.json").read_text())
    assert got["loss"] is None and got["v"] == [None, 1.5]
    ckpt, _ = _ckpt(tmp_path / "m.ckpt")  # one tag excluded: its per-tag AUCs are null
    assert main(["evaluate", str(ckpt), "--data", str(store), "--json", "--out", str(tmp_path / "o")]) == 0
    assert strict(capsys.readouterr().out)["per_tag"][TAGS.index("clicks")]["roc_auc"] is None
    strict((tmp_path / "o" / "metrics.json").read_text())


def test_tags_are_matched_by_name_and_missing_ones_noted(store, tmp_path):
    ckpt, _ = _ckpt(tmp_path / "m.ckpt", tags=("high", "low", "unknown tag"))
    r = evaluate(ckpt, store, "valid")
    assert r.tags == ["high", "low"]
    st = SegmentStore(store)
    np.testing.assert_array_equal(r.labels[:, 0], st.labels[st.split_indices("valid"), TAGS.index("high")])
    assert any("unknown tag" in n for n in r.notes)
    ckpt2, _ = _ckpt(tmp_path / "n.ckpt", tags=("a", "b"))
    with pytest.raises(ValueError, match="none of the checkpoint"):
        evaluate(ckpt2, store, "valid")


def test_sample_rate_mismatch_is_refused(store, tmp_path, capsys):
    ckpt, _ = _ckpt(tmp_path / "m.ckpt", sr=16000)
    with pytest.raises(ValueError, match="8000 Hz"):
        evaluate(ckpt, store, "test")
    assert main(["evaluate", str(ckpt), "--data", str(store)]) == 2
    assert "16000" in capsys.readouterr().err


def test_write_outputs_and_plots(store, tmp_path):
    ckpt, _ = _ckpt(tmp_path / "m.ckpt")
    r = evaluate(ckpt, store, "test")
    paths = r.write(tmp_path / "ev")
    d = json.loads(paths["json"].read_text())
    assert d["excluded_tags"] == ["clicks"] and d["macro_roc_auc"] == pytest.approx(r.roc_auc)
    lines = paths["per_tag"].read_text().splitlines()
    assert lines[0] == "tag,positives,prevalence,roc_auc,pr_auc,threshold,precision,recall,f1" and len(lines) == 1 + len(TAGS)
    assert paths["plot"].stat().st_size > 1000


def test_training_curves_need_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_training_curves(tmp_path)
    log = tmp_path / "logs" / "csv"
    log.mkdir(parents=True)
    (log / "metrics-1.csv").write_text("epoch,step,train_loss_epoch,val_loss,val_roc_auc,lr\n"
                                       "0,9,0.7,0.6,0.55,0.01\n1,19,0.6,0.5,0.62,0.01\n")
    (log / "metrics.csv").write_text("epoch,step,train_loss_epoch,val_loss,val_roc_auc,lr\n"
                                     "1,19,0.6,0.45,0.64,0.01\n2,29,0.5,0.4,0.7,0.002\n")
    from samplecnn.evaluation import epoch_curves
    c = epoch_curves(tmp_path)
    assert c["val_loss"] == {0: 0.6, 1: 0.45, 2: 0.4}  # the resumed part wins
    assert plot_training_curves(tmp_path).stat().st_size > 1000


@pytest.mark.parametrize("aggregate,last,hop_windows", [("mean", "drop", 1.0), ("logit_mean", "pad", 1.0),
                                                     ("max", "pad", 0.5)])
def test_evaluate_and_tag_give_the_same_clip_scores(tmp_path, aggregate, last, hop_windows):
    """The one scoring path: the same audio through `evaluate` (from a store) and through
    `tag` (from the files) gives the same windows, logits and clip scores."""
    import soundfile as sf

    from samplecnn.data import prepare_csv
    from samplecnn.tagging import Tagger

    ckpt, model = _ckpt(tmp_path / "m.ckpt", seed=4)
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(7)
    lines = ["path,tags,split"]
    for i, n in enumerate([400, 729, 2000, 3001, 5000]):  # shorter than, equal to, longer than a window
        # Values k / 32767 survive the store's int16 round trip exactly, so both paths see
        # bit-identical samples.
        x = np.rint(rng.uniform(-0.5, 0.5, n) * 32767) / 32767
        sf.write(root / f"c{i}.wav", x.astype(np.float32), 8000, subtype="FLOAT")
        lines.append(f"c{i}.wav,{TAGS[i % len(TAGS)]},test")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    store = prepare_csv(root, tmp_path / "store", sample_rate=8000, min_samples=0, workers=1).store
    hop = int(729 * hop_windows)
    ev = evaluate(ckpt, store, "test", aggregate=aggregate, last=last, hop=hop / 8000, batch_size=3)
    tagger = Tagger.from_checkpoint(ckpt, batch_size=5)
    paths = sorted(str(p) for p in root.glob("*.wav"))
    records = {Path(r.path).stem: r.record for r in tagger.tag_files(
        paths, aggregate=aggregate, last=last, hop=hop / 8000)}
    segments = 0
    for clip_id, scores in zip(ev.clip_ids, ev.clip_scores):
        rec = records[str(clip_id)]
        tagged = np.array([rec["tags"][t] for t in ev.tags])
        np.testing.assert_allclose(tagged, scores, atol=2e-6)  # records round to 1e-6
        segments += rec["segments"]
    assert segments == ev.n_segments


def test_evaluation_does_not_depend_on_batch_size(store, tmp_path):
    ckpt, _ = _ckpt(tmp_path / "m.ckpt", seed=1)
    a = evaluate(ckpt, store, "test", batch_size=5)
    b = evaluate(ckpt, store, "test", batch_size=64)
    np.testing.assert_allclose(a.clip_scores, b.clip_scores, rtol=1e-5, atol=1e-6)
    assert len(a.clip_ids) == len(SegmentStore(store).split_indices("test"))

def test_validation_clip_scores_equal_evaluate_on_clips_longer_than_the_cap(store, tmp_path):
    """Validation (the training loop's clip scores) and `evaluate` with the same options
    (10 segments per clip, full segments only, mean) give the same clip scores, on clips
    of 21 segments: the cap is what makes them agree."""
    import lightning as L

    from samplecnn.training.datamodule import SegmentDataModule
    from samplecnn.training.module import TaggingModule

    store = SegmentStore(store)
    ckpt, model = _ckpt(tmp_path / "m.ckpt", seed=9)
    assert int(store.lengths[store.split_indices("valid")].min()) // 729 > 10  # longer than the cap
    module = TaggingModule(model.config.to_dict(), optim={"recipe": "adam"})
    module.model.load_state_dict(model.state_dict())
    dm = SegmentDataModule(str(store.path), 729, valid_segments_per_clip=10, eval_batch_size=7)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    clip_ids, val_scores = module.val_clip_scores
    clips = store.split_indices("valid")
    np.testing.assert_array_equal(clip_ids, np.sort(clips))
    by_clip = dict(zip(clip_ids.tolist(), val_scores))
    val_scores = np.stack([by_clip[int(c)] for c in clips])

    capped = evaluate(ckpt, store, "valid", max_windows=10)
    assert capped.n_segments == 10 * len(clips)
    np.testing.assert_allclose(capped.clip_scores, val_scores, atol=1e-5)
    # Without the cap `evaluate` scores all 21 segments: not what validation reports.
    uncapped = evaluate(ckpt, store, "valid")
    assert np.abs(uncapped.clip_scores - val_scores).max() > 1e-3


def test_padded_ddp_shards_count_each_segment_once():
    from samplecnn.training.module import once_per_segment

    # Two ranks, 5 segments: rank 1's shard is padded with segment 0 again.
    index = np.array([0, 2, 4, 1, 3, 0])
    logits = np.array([[0.0], [2.0], [4.0], [1.0], [3.0], [0.0]])
    clips = np.array([0, 1, 1, 0, 1, 0])
    kept_logits, kept_clips = once_per_segment(index, logits, clips)
    np.testing.assert_array_equal(kept_logits[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(kept_clips, [0, 0, 1, 1, 1])
