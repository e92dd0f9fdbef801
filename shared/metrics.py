"""Test metrics that can be summed across sites: counts in, pooled accuracy, balanced accuracy and AUC out.

A site never sends per-image values. For the global model on its test share it sends an
:class:`EvalCounts`: per-class counts, the confusion matrix, and for every class ``k`` two histograms
of the model's score for ``k`` (one over the images of class ``k``, one over the rest), over the
:data:`SCORE_BINS` bins fixed here (:data:`SCORE_EDGES`), never chosen by the coordinator. Counts add
up, so the coordinator sums the sites' counts and computes every pooled metric from the sum, as if it
held all test scores at once. A site whose share lacks a class still counts towards every pooled metric.
A deployed site adds noise to every count before it answers (``site_agent.evaluate``); what is here is
exact arithmetic on whatever counts arrive.

The score binned is the log-odds of class ``k``, ``logit_k - logsumexp(logits without k)``. It ranks
images exactly as the softmax probability does, but does not saturate at 0 or 1. The bins are few on
purpose: with many, a crafted model can give one image a bin of its own and read the image off its
position (issue 27). Twelve bins, finer near 0 where a classifier's decisions are, symmetric about 0
so that a two-class answer needs only class 1's histograms (class 0's log-odds is minus class 1's).

Binning error of the AUC: two images in different bins are ordered exactly; a positive/negative pair
in the same bin counts 1/2, while its true contribution is 0, 1/2 or 1. So the binned AUC of class
``k`` differs from the exact AUC of the same scores by at most ``sum_b pos_b * neg_b / (2 P N)``,
computed from the histograms themselves (:meth:`EvalCounts.auc_error_bound`, the mean over classes).
With twelve bins that bound is loose: 0.02 to 0.10 for the quick dev-set models of docs/benchmarks.md
(2026-12-07), whose binned AUC was 0.000 to 0.011 from the exact one. Every product and sum of counts
is taken in Python integers, so no pooled total can overflow.

Tuning the class-imbalance correction (``coordinator.imbalance``) asks for the hits of the model with
``scale * shift`` added to its logits, for each scale of the published grid :data:`TUNING_SCALES`
(:func:`hits_by_scale`). Along a line of logits an image's prediction is right on one run of scales,
so one image changes at most two of the grid's increments; a site's noise relies on that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Bin edges of the log-odds, fixed in advance: bin 0 holds scores below -5, bin 11 scores from 5 up.
SCORE_EDGES = (-5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
SCORE_BINS = len(SCORE_EDGES) + 1
_EDGES = np.array(SCORE_EDGES)
# The scales of the logit shift a site counts hits for: 0 (none) to 6 times it, in steps of a quarter.
TUNING_SCALES = tuple(i / 4 for i in range(25))


def log_odds(logits: np.ndarray) -> np.ndarray:
    """Per-class log-odds (N, K) from logits (N, K): ``logit_k - logsumexp_{j != k} logit_j``."""
    logits = np.asarray(logits, np.float64)
    k = logits.shape[1]
    others = np.where(np.eye(k, dtype=bool)[None], -np.inf, logits[:, None, :])  # (N, K, K), row k without k
    return logits - np.logaddexp.reduce(others, axis=2)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The bin (0 .. SCORE_BINS - 1) of each score, same shape: bin ``i`` holds ``[edge_{i-1}, edge_i)``."""
    return np.searchsorted(_EDGES, scores, side="right")


@dataclass(frozen=True)
class EvalCounts:
    """Summable evaluation counts for a K-class problem.

    ``class_counts`` (K,) test images per true class; ``confusion`` (K, K) with rows the true class and
    columns the predicted one; ``histograms`` (K, 2, SCORE_BINS): for score class k, row 0 the
    histogram over images of class k (positives), row 1 over all others (negatives). All int64.
    """

    class_counts: np.ndarray
    confusion: np.ndarray
    histograms: np.ndarray

    @classmethod
    def empty(cls, num_classes: int) -> EvalCounts:
        k = num_classes
        return cls(np.zeros(k, np.int64), np.zeros((k, k), np.int64), np.zeros((k, 2, SCORE_BINS), np.int64))

    @classmethod
    def from_scores(cls, labels: np.ndarray, scores: np.ndarray) -> EvalCounts:
        """Counts from true labels (N,) and per-class log-odds (N, K) (any score ranked like them, in range)."""
        n, k = scores.shape
        labels = np.asarray(labels, np.int64).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} score rows")
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (labels, scores.argmax(axis=1)), 1)
        bins = score_bins(scores)  # (N, K)
        histograms = np.zeros((k, 2, SCORE_BINS), np.int64)
        for c in range(k):
            positive = labels == c
            histograms[c, 0] = np.bincount(bins[positive, c], minlength=SCORE_BINS)
            histograms[c, 1] = np.bincount(bins[~positive, c], minlength=SCORE_BINS)
        return cls(np.bincount(labels, minlength=k).astype(np.int64), confusion, histograms)

    def __add__(self, other: EvalCounts) -> EvalCounts:
        return EvalCounts(self.class_counts + other.class_counts, self.confusion + other.confusion,
                          self.histograms + other.histograms)

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def num_examples(self) -> int:
        return sum(int(c) for c in self.class_counts)

    def accuracy(self) -> float:
        hits = sum(int(h) for h in np.diag(self.confusion))
        return hits / self.num_examples if self.num_examples else math.nan

    def recall(self) -> list[float]:
        """Per-class recall; NaN for a class with no test image."""
        hits = np.diag(self.confusion)
        return [int(h) / int(c) if c else math.nan for h, c in zip(hits, self.class_counts, strict=True)]

    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present (scikit-learn's ``balanced_accuracy_score``)."""
        present = [r for r in self.recall() if not math.isnan(r)]
        return math.fsum(present) / len(present) if present else math.nan

    def majority_rate(self) -> float:
        """Accuracy of always predicting the most frequent test class: the floor a useful model beats."""
        return int(self.class_counts.max()) / self.num_examples if self.num_examples else math.nan

    def class_auc(self) -> list[float]:
        """One-vs-rest AUC per class from the histograms; NaN where a class has no positive or no negative."""
        return [_binned_auc(pos, neg) for pos, neg in self.histograms]

    def auc(self) -> float:
        """Macro one-vs-rest AUC over the classes where it is defined (MedMNIST's multi-class AUC).

        For two classes both one-vs-rest AUCs equal the AUC of class 1's score (the bins are symmetric
        about 0 and class 0's log-odds is minus class 1's), which is MedMNIST's binary AUC.
        """
        defined = [a for a in self.class_auc() if not math.isnan(a)]
        return math.fsum(defined) / len(defined) if defined else math.nan

    def auc_error_bound(self) -> float:
        """Largest possible difference between :meth:`auc` and the exact AUC of the same scores (binning only)."""
        bounds = [_tie_fraction(pos, neg) / 2 for pos, neg in self.histograms if pos.sum() and neg.sum()]
        return math.fsum(bounds) / len(bounds) if bounds else math.nan


def hits_by_scale(logits: np.ndarray, labels: np.ndarray, shift: np.ndarray,
                  scales: Sequence[float] = TUNING_SCALES) -> np.ndarray:
    """Right predictions (S,) int64 of ``argmax(logits + scale * shift)`` for each of the S scales.

    Logits (N, K), labels (N,), shift (K,). What a site counts to tune the class-imbalance correction
    (``coordinator.imbalance``): counts that add up across sites, never a per-image value. An image
    counts on the scales from the first to the last where it is predicted right: the same in exact
    arithmetic (argmax along a line keeps a class on one run of scales), and one run per image however
    floating point rounds a near tie, so one image moves at most two increments of the hits.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64).reshape(-1)
    scales = np.asarray(scales, np.float64)
    shifted = logits[:, None, :] + scales[None, :, None] * np.asarray(shift, np.float64)  # (N, S, K)
    right = shifted.argmax(axis=2) == labels[:, None]  # (N, S)
    first, last = right.argmax(axis=1), len(scales) - 1 - right[:, ::-1].argmax(axis=1)
    any_right = right.any(axis=1)
    steps = np.zeros(len(scales) + 1, np.int64)
    np.add.at(steps, first[any_right], 1)
    np.add.at(steps, last[any_right] + 1, -1)
    return np.cumsum(steps)[:-1]


def committed_cap(committed: int, rounding: int) -> int:
    """The most images a count committed as ``committed``, rounded to a multiple of ``rounding``, can stand for."""
    return committed + rounding // 2


def fit_counts(values: np.ndarray, total: int) -> np.ndarray:
    """The non-negative integers (same shape, flattened order) adding up to ``total`` nearest to ``values``.

    Euclidean projection of ``values`` onto ``{x >= 0, sum x = total}`` (one threshold subtracted, then
    clipped at 0; Duchi et al. 2008), rounded by largest remainder. Turns noisy counts into consistent
    ones: post-processing, which a differentially private answer allows. ``total`` 0 gives zeros.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if total <= 0 or len(v) == 0:
        return np.zeros(len(v), np.int64)
    ordered = np.sort(v)[::-1]
    excess = np.cumsum(ordered) - total
    rank = np.arange(1, len(v) + 1)
    kept = ordered - excess / rank > 0
    threshold = excess[kept][-1] / rank[kept][-1]
    x = np.maximum(v - threshold, 0.0)
    out = np.floor(x).astype(np.int64)
    short = total - int(out.sum())
    out[np.argsort(-(x - out), kind="stable")[:short]] += 1
    return out


def _binned_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(same bin), from the two histograms.

    In Python integers: pooled counts of many sites near the schema's limit overflow int64 products.
    """
    pos, neg = [int(x) for x in pos], [int(x) for x in neg]
    p, n = sum(pos), sum(neg)
    if p == 0 or n == 0:
        return math.nan
    below = 0  # negatives in strictly lower bins
    twice = 0  # 2 * (ordered pairs + half the tied ones)
    for a, b in zip(pos, neg, strict=True):
        twice += a * (2 * below + b)
        below += b
    return twice / (2 * p * n)


def _tie_fraction(pos: np.ndarray, neg: np.ndarray) -> float:
    pos, neg = [int(x) for x in pos], [int(x) for x in neg]
    return sum(a * b for a, b in zip(pos, neg, strict=True)) / (sum(pos) * sum(neg))
