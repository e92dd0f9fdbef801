"""Accuracy and AUC as MedMNIST defines them, and their example-weighted aggregation across sites."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def accuracy_and_auc(labels: np.ndarray, scores: np.ndarray, task: str) -> tuple[float, float]:
    """MedMNIST's ``getACC``/``getAUC`` for labels (N,) and scores (N, num_classes).

    AUC is NaN when it is undefined (a test split that holds a single class), rather than an error.
    """
    from medmnist.evaluator import getACC, getAUC

    acc = float(getACC(labels, scores, task))
    if len(np.unique(labels)) < 2:  # roc_auc_score is undefined with one class present
        return acc, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a multi-class split missing one class warns per class
        try:
            auc = float(getAUC(labels, scores, task))
        except ValueError:
            auc = math.nan
    return acc, auc


def weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    """Mean of the finite values weighted by their weights; NaN when none is finite."""
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if math.isfinite(v) and w > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else math.nan
