"""Test metrics that can be summed across sites: counts in, pooled accuracy, balanced accuracy and AUC out.

A site never sends per-image values. For the global model on its test share it sends an
:class:`EvalCounts`: per-class counts, the confusion matrix, and for every class ``k`` two fixed-bin
histograms of the model's score for ``k`` (one over the images of class ``k``, one over the rest).
Counts add up, so the coordinator sums the sites' counts and computes every pooled metric from the
sum, as if it held all test scores at once. A site whose share lacks a class still counts towards
every pooled metric.

The score binned is the log-odds of class ``k``, ``logit_k - logsumexp(logits without k)``. It ranks
images exactly as the softmax probability does, but does not saturate at 0 or 1, so a confident
model's scores spread over the bins instead of piling into the last one.

Binning error of the AUC: two images in different bins are ordered exactly; a positive/negative pair
in the same bin counts 1/2, while its true contribution is 0, 1/2 or 1. So the binned AUC of class
``k`` differs from the exact AUC of the same scores by at most ``sum_b pos_b * neg_b / (2 P N)``,
computed from the histograms themselves (:meth:`EvalCounts.auc_error_bound`, the mean over classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCORE_BINS = 1000
LOG_ODDS_LIMIT = 20.0  # bins span [-20, 20]; scores beyond fall into the end bins
_EDGES = np.linspace(-LOG_ODDS_LIMIT, LOG_ODDS_LIMIT, SCORE_BINS + 1)


def log_odds(logits: np.ndarray) -> np.ndarray:
    """Per-class log-odds (N, K) from logits (N, K): ``logit_k - logsumexp_{j != k} logit_j``."""
    logits = np.asarray(logits, np.float64)
    k = logits.shape[1]
    others = np.where(np.eye(k, dtype=bool)[None], -np.inf, logits[:, None, :])  # (N, K, K), row k without k
    return logits - np.logaddexp.reduce(others, axis=2)


@dataclass(frozen=True)
class EvalCounts:
    """Summable evaluation counts for a K-class problem.

    ``class_counts`` (K,) test images per true class; ``confusion`` (K, K) with rows the true class and
    columns the predicted one; ``histograms`` (K, 2, SCORE_BINS): for score class k, row 0 the
    histogram over images of class k (positives), row 1 over all others (negatives).
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
        bins = np.clip(np.searchsorted(_EDGES, scores, side="right") - 1, 0, SCORE_BINS - 1)  # (N, K)
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
        return int(self.class_counts.sum())

    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.num_examples) if self.num_examples else math.nan

    def recall(self) -> list[float]:
        """Per-class recall; NaN for a class with no test image."""
        hits = np.diag(self.confusion)
        return [float(h / c) if c else math.nan for h, c in zip(hits, self.class_counts, strict=True)]

    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present (scikit-learn's ``balanced_accuracy_score``)."""
        present = [r for r in self.recall() if not math.isnan(r)]
        return float(np.mean(present)) if present else math.nan

    def majority_rate(self) -> float:
        """Accuracy of always predicting the most frequent test class: the floor a useful model beats."""
        return float(self.class_counts.max() / self.num_examples) if self.num_examples else math.nan

    def class_auc(self) -> list[float]:
        """One-vs-rest AUC per class from the histograms; NaN where a class has no positive or no negative."""
        return [_binned_auc(pos, neg) for pos, neg in self.histograms]

    def auc(self) -> float:
        """Macro one-vs-rest AUC over the classes where it is defined (MedMNIST's multi-class AUC).

        For two classes both one-vs-rest AUCs equal the AUC of class 1's score (the bins are symmetric
        about 0 and class 0's log-odds is minus class 1's), which is MedMNIST's binary AUC.
        """
        defined = [a for a in self.class_auc() if not math.isnan(a)]
        return float(np.mean(defined)) if defined else math.nan

    def auc_error_bound(self) -> float:
        """Largest possible difference between :meth:`auc` and the exact AUC of the same scores."""
        bounds = [_tie_fraction(pos, neg) / 2 for pos, neg in self.histograms if pos.sum() and neg.sum()]
        return float(np.mean(bounds)) if bounds else math.nan


def confusions_by_scale(logits: np.ndarray, labels: np.ndarray, shift: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Confusion matrices (S, K, K) of ``argmax(logits + scale * shift)`` for each of the S scales.

    What a site returns to tune the class-imbalance correction (``coordinator.imbalance``): counts that
    add up across sites, one matrix per candidate, never a per-image value.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64).reshape(-1)
    k = logits.shape[1]
    confusions = np.zeros((len(scales), k, k), np.int64)
    for i, scale in enumerate(scales):
        np.add.at(confusions[i], (labels, (logits + scale * np.asarray(shift)).argmax(axis=1)), 1)
    return confusions


def _binned_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(same bin), from the two histograms."""
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return math.nan
    negatives_below = np.cumsum(neg) - neg  # negatives in strictly lower bins
    return float((pos * negatives_below).sum() + 0.5 * (pos * neg).sum()) / float(p * n)


def _tie_fraction(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos * neg).sum()) / float(pos.sum() * neg.sum())
