"""Metrics against hand-computed values; aggregation; tags without positives."""
from __future__ import annotations

import math

import numpy as np
import pytest

from samplecnn.metrics import aggregate, aggregate_clips, format_table, tag_metrics


def test_aggregate_mean_and_max_by_hand():
    # Clips 7 and 3, segments interleaved and unsorted.
    # Aggregation takes logits; these are the logits of round scores.
    scores = np.array([[0.2, 0.9], [0.6, 0.1], [0.4, 0.5], [0.8, 0.3], [0.1, 0.7]])
    logits = np.log(scores / (1 - scores))
    clips = np.array([7, 3, 7, 3, 3])
    ids, mean = aggregate_clips(logits, clips, "mean")
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(mean, [[(0.6 + 0.8 + 0.1) / 3, (0.1 + 0.3 + 0.7) / 3],
                                      [(0.2 + 0.4) / 2, (0.9 + 0.5) / 2]])
    _, mx = aggregate_clips(logits, clips, "max")
    np.testing.assert_allclose(mx, [[0.8, 0.7], [0.4, 0.9]])


def test_aggregate_logit_mean_by_hand():
    logits = np.array([[0.0], [math.log(0.9 / 0.1)]])  # scores 0.5 and 0.9
    _, out = aggregate_clips(logits, np.array([0, 0]), "logit_mean")
    expected = 1 / (1 + math.exp(-(0.0 + math.log(0.9 / 0.1)) / 2))
    assert out[0, 0] == pytest.approx(expected, rel=1e-6)


def test_aggregate_is_exact_for_extreme_logits_and_single_clips():
    # logit_mean from logits is exact where going through rounded scores is not.
    logits = np.array([[40.0, -40.0], [30.0, -50.0]])
    _, out = aggregate_clips(logits, np.array([5, 5]), "logit_mean")
    np.testing.assert_allclose(out[0], [1 / (1 + math.exp(-35.0)), 1 / (1 + math.exp(45.0))], rtol=1e-12)
    np.testing.assert_allclose(aggregate(logits, "max"), 1 / (1 + np.exp(-logits.max(axis=0))))
    with pytest.raises(ValueError, match="n_windows"):
        aggregate(np.zeros((0, 2)))


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_clips(np.zeros((2, 1)), np.array([0, 1]), "median")
    with pytest.raises(ValueError, match="do not match"):
        aggregate_clips(np.zeros((3, 1)), np.array([0, 1]))


def test_roc_and_pr_auc_by_hand():
    y = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    s = np.array([[0.1, 0.5], [0.4, 0.5], [0.35, 0.5], [0.8, 0.5]])
    m = tag_metrics(y, s, ["a", "b"])
    # Tag a: positive/negative pairs (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4): 3/4.
    assert m.roc_auc[0] == pytest.approx(0.75)
    # Ranked 0.8(+), 0.4(-), 0.35(+), 0.1(-): precisions at the positives 1 and 2/3.
    assert m.pr_auc[0] == pytest.approx((1 + 2 / 3) / 2)
    # Tag b: all scores tied -> chance; AP = prevalence.
    assert m.roc_auc[1] == pytest.approx(0.5)
    assert m.pr_auc[1] == pytest.approx(0.5)
    assert m.macro_roc_auc == pytest.approx((0.75 + 0.5) / 2)
    assert m.macro_pr_auc == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert m.excluded == []


def test_tags_without_positive_or_negative_are_excluded_not_crashing():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    s = np.array([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.7, 0.1, 0.9]])
    m = tag_metrics(y, s, ["x", "never", "always"])
    assert m.excluded == ["never", "always"]
    assert np.isnan(m.roc_auc[1]) and np.isnan(m.roc_auc[2])
    assert m.macro_roc_auc == pytest.approx(1.0)  # only tag x counts
    d = m.to_dict()
    assert d["n_tags_scored"] == 1 and d["excluded_tags"] == ["never", "always"]
    assert d["per_tag"][1]["roc_auc"] is None and d["per_tag"][1]["positives"] == 0
    table = format_table(m)
    assert "never" in table and "excluded" in table


def test_all_tags_excluded_gives_nan_macro():
    m = tag_metrics(np.zeros((3, 2)), np.random.default_rng(0).random((3, 2)))
    assert math.isnan(m.macro_roc_auc) and len(m.excluded) == 2


def test_rejects_mismatched_shapes_and_nan_scores():
    with pytest.raises(ValueError, match="shapes"):
        tag_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        tag_metrics(np.array([[0], [1]]), np.array([[0.1], [np.nan]]))
