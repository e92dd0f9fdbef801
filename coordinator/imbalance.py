"""Correcting the global model for class imbalance: synthetic sets are balanced, real test data is not.

A model trained on the pool learns the pool's class prior ``q`` (near uniform: ``ipc`` images per
class and site), while the sites' patients follow the real prior ``pi``. Sites may release their
real per-class training counts in the signed manifest (``real_class_counts``; their policy may round
or withhold them); their sum estimates ``pi``. Two corrections use it:

- ``logit-adjust``: add ``log pi_c - log q_c`` to the logit of class ``c`` (post-hoc logit adjustment,
  Menon et al., ICLR 2021, applied in the direction that restores the real prior). Baked into the
  classifier's bias, so the global model is an ordinary ConvNet.
- ``tuned-logit-adjust``: the same shift times a scale ``tau`` chosen where real images are: every site
  counts, on its own training images, the right predictions of the uncorrected model for each ``tau`` of
  the published grid (``shared.metrics.TUNING_SCALES``; noisy, summed here), and the ``tau`` with the best
  pooled accuracy wins (Menon
  et al. tune ``tau`` on held-out data too). Needed because a network fitted to a few dozen synthetic
  images grows its logits far beyond ``log pi - log q``, so the plain shift moves few predictions.
  The global model never saw those images (it trained on the synthetic set), but the set was made
  from them, so the choice leans slightly optimistic; the test images stay out of it.
- ``reweight``: weight each class's loss by ``pi_c / q_c`` while training.

Both trade balanced accuracy for accuracy: the report shows the uncorrected model beside the corrected one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from shared.bundle import OpenedBundle
from shared.metrics import TUNING_SCALES

log = logging.getLogger(__name__)


def real_class_prior(bundles: Sequence[OpenedBundle], num_classes: int) -> np.ndarray | None:
    """The class prior (K,) of the summed released counts (add-one smoothed); None when no site released any."""
    released = [b.manifest.real_class_counts for b in bundles if b.manifest.real_class_counts is not None]
    if len(released) < len(bundles):
        log.warning("%d of %d sites withheld their class counts: the class prior comes from the others",
                    len(bundles) - len(released), len(bundles))
    if not released:
        return None
    counts = np.array([sum(r.get(c, 0) for r in released) for c in range(num_classes)], dtype=np.float64)
    return (counts + 1) / (counts + 1).sum()


def pooled_prior(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """The class frequencies (K,) of the pooled synthetic set; 0 for a class no site distilled."""
    counts = np.bincount(labels.numpy(), minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def logit_shift(real: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """``log real - log pooled`` per class (K,); 0 for classes absent from the pool (never learned)."""
    present = pooled > 0
    return np.where(present, np.log(real) - np.log(np.where(present, pooled, 1.0)), 0.0)


def class_weights(real: np.ndarray, pooled: np.ndarray) -> torch.Tensor:
    """Loss weight per class (K,), ``real / pooled``, scaled so the mean weight over pooled images is 1."""
    present = pooled > 0
    weights = np.where(present, real / np.where(present, pooled, 1.0), 0.0)
    weights /= (weights * pooled).sum()
    return torch.tensor(weights, dtype=torch.float32)


def choose_scale(hits: Sequence[int] | np.ndarray, scales: Sequence[float] = TUNING_SCALES) -> float:
    """The scale with the most summed right predictions (one of (S,)); ties go to the scale nearest 1.

    Accuracy under the sites' own class mix, which is what the correction restores. Where the images the
    model is used on have another mix the choice can cost there (docs/benchmarks.md: the PneumoniaMNIST
    export); choosing by balanced accuracy instead measured no better.
    """
    hits = np.asarray([int(h) for h in hits], dtype=object)  # Python integers: sums of many sites cannot overflow
    best = np.flatnonzero(hits == hits.max())
    return float(min((scales[i] for i in best), key=lambda scale: abs(scale - 1.0)))
