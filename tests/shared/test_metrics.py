"""Pooled metrics from summed site counts agree with scikit-learn on the concatenated per-image scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from coordinator.evaluate import SiteEvaluation, aggregate, parse_site_counts
from shared.errors import InvalidReply
from shared.metrics import EvalCounts, log_odds
from shared.schemas import EvaluateReply


def _site_logits(rng: np.random.Generator, labels: np.ndarray, k: int, signal: float) -> np.ndarray:
    """Logits (N, K) that favour the true class by ``signal``, plus noise."""
    logits = rng.normal(size=(len(labels), k)) * 2
    logits[np.arange(len(labels)), labels] += signal
    return logits


def _sites(k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four sites' (labels, logits): one holding a single class, one missing a class, one confident."""
    rng = np.random.default_rng(seed)
    labels = [np.full(40, k - 1), rng.integers(0, k - 1, 70), rng.integers(0, k, 120), rng.integers(0, k, 90)]
    signals = [1.0, 2.0, 1.5, 25.0]  # the last one saturates softmax: scores near 0 and 1
    return [(y, _site_logits(rng, y, k, s)) for y, s in zip(labels, signals, strict=True)]


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_counts_match_sklearn_on_concatenated_scores(k: int, seed: int) -> None:
    """Summed counts give sklearn's accuracy, balanced accuracy and confusion exactly, and its AUC within the bound."""
    sites = _sites(k, seed)
    total = EvalCounts.empty(k)
    for labels, logits in sites:
        total = total + EvalCounts.from_scores(labels, log_odds(logits))
    y = np.concatenate([labels for labels, _ in sites])
    scores = log_odds(np.concatenate([logits for _, logits in sites]))
    predicted = scores.argmax(axis=1)

    assert total.num_examples == len(y)
    assert total.accuracy() == pytest.approx(accuracy_score(y, predicted))
    assert total.balanced_accuracy() == pytest.approx(balanced_accuracy_score(y, predicted))
    np.testing.assert_array_equal(total.confusion, confusion_matrix(y, predicted, labels=list(range(k))))
    if k == 2:
        exact = roc_auc_score(y, scores[:, 1])
    else:
        exact = np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(k)])
    bound = total.auc_error_bound()
    assert bound < 0.05  # twelve fixed bins (shared.metrics): few enough that no image gets a bin of its own
    assert abs(total.auc() - exact) <= bound + 1e-12


def test_a_site_with_one_class_still_counts_in_the_pooled_auc() -> None:
    """A site whose share holds one class has no AUC of its own, but moves the pooled AUC."""
    rng = np.random.default_rng(3)
    mixed = rng.integers(0, 2, 100)
    one_class = np.zeros(50, dtype=int)
    a = EvalCounts.from_scores(mixed, log_odds(_site_logits(rng, mixed, 2, 2.0)))
    b = EvalCounts.from_scores(one_class, log_odds(_site_logits(rng, one_class, 2, -2.0)))  # wrong on every image
    assert math.isnan(b.auc()) and not math.isnan(a.auc())
    assert (a + b).auc() < a.auc() - 0.05
    assert (a + b).num_examples == 150


def test_confident_scores_share_the_end_bin_and_the_bound_says_so() -> None:
    """The bins are few and fixed: log-odds beyond 5 all fall into the last one, where positives and negatives tie.
    The AUC then reads 0.5 and its error bound is 0.5, so the report never claims more than the counts hold."""
    labels = np.array([0, 1] * 50)
    logits = np.zeros((100, 2))
    logits[:, 1] = np.where(labels == 1, 30 + np.arange(100) * 0.1, 25 + np.arange(100) * 0.1)
    counts = EvalCounts.from_scores(labels, log_odds(logits))
    exact = roc_auc_score(labels, logits[:, 1] - logits[:, 0])
    assert counts.auc() == 0.5 and counts.auc_error_bound() == 0.5 and abs(counts.auc() - exact) <= 0.5


def test_site_without_test_images_is_reported_not_dropped() -> None:
    """An empty site is listed with its note and zero images; pooled figures come from the others."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    full = SiteEvaluation("site-0", 1, EvalCounts.from_scores(labels, log_odds(_site_logits(rng, labels, 3, 2.0))))
    empty = SiteEvaluation("site-1", 2, EvalCounts.empty(3), "holds no test images")
    failed = SiteEvaluation("site-2", 3, None, "site reported an error: boom")
    report = aggregate([failed, empty, full], 3)
    assert report.num_examples == 60
    assert [(e.site_id, m is None) for e, m in report.sites] == [("site-0", False), ("site-1", False), ("site-2", True)]
    assert report.sites[1][1].num_examples == 0 and math.isnan(report.sites[1][1].accuracy)


def _reply(labels: np.ndarray, k: int) -> dict:
    rng = np.random.default_rng(0)
    return EvaluateReply.from_counts(EvalCounts.from_scores(labels, log_odds(_site_logits(rng, labels, k, 1.0)))).to_metrics()


def test_valid_reply_round_trips() -> None:
    """What a site sends parses back into the same counts."""
    labels = np.array([0, 1, 2, 2, 1])
    counts = parse_site_counts(_reply(labels, 3), 3)
    assert counts.class_counts.tolist() == [1, 2, 2]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("num-examples", 10**15, "num-examples"),
        ("num-examples", 6, "adding up to num-examples"),
        ("class-counts", [1, 2], "class-counts"),
        ("class-counts", [1, -2, 2], "class-counts"),
        ("confusion", [1.5] * 9, "confusion"),
        ("confusion", [0] * 9, "confusion rows"),
        ("score-histograms", [0] * 6000, "score-histograms"),
        ("epsilon", 0.0, "epsilon"),
        ("accuracy", 7.0, "accuracy"),
    ],
)
def test_inconsistent_or_absurd_reply_is_rejected(field: str, value: object, reason: str) -> None:
    """A reply whose counts are out of range or do not add up is refused with the field named."""
    reply = _reply(np.array([0, 1, 2, 2, 1]), 3)
    reply[field] = value
    with pytest.raises(InvalidReply, match=reason):
        parse_site_counts(reply, 3)


def test_reply_for_another_number_of_classes_is_rejected() -> None:
    """Counts shaped for two classes are refused for a three-class task."""
    with pytest.raises(InvalidReply, match="class-counts"):
        parse_site_counts(_reply(np.array([0, 1, 1]), 2), 3)


def _distill_metrics(**change: float) -> dict:
    return {"num-examples": 100.0, "distill-seconds": 12.5, "seal-seconds": 0.1, "bundle-bytes": 30000.0,
            "synthetic-images": 20.0, **change}


@pytest.mark.parametrize("change", [{"distill-seconds": float("inf")}, {"num-examples": 1e15},
                                    {"bundle-bytes": -1.0}, {"synthetic-images": float("nan")}])
def test_nonsense_beside_a_bundle_rejects_the_reply(change: dict) -> None:
    """The unsigned numbers a site sends with its bundle are bounded; inf, NaN and absurd values reject the reply."""
    from types import SimpleNamespace

    from coordinator.collect import _reply_metrics

    ok = SimpleNamespace(content=SimpleNamespace(metric_records={"metrics": _distill_metrics()}))
    assert _reply_metrics(ok)["distill-seconds"] == 12.5
    bad = SimpleNamespace(content=SimpleNamespace(metric_records={"metrics": _distill_metrics(**change)}))
    with pytest.raises(InvalidReply, match="reply metrics"):
        _reply_metrics(bad)
