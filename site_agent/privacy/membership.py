"""Membership inference against a model trained on a released set: can it tell the site's training
images (members) from its held-out images (non-members)?

Two attacks, both on the model's logit-scaled confidence in the true class,
``phi = z_y - logsumexp(z_{k != y})`` (log p/(1-p), which is close to Gaussian across models):

- **threshold**: a higher ``phi`` says member (the loss attack of Yeom et al. 2018, rank-equivalent);
- **LiRA** (Carlini et al., S&P 2022, the online attack with a global variance, which is the
  variant that works with few shadow models): shadow models are trained like the target on sets
  built from random halves of all the site's images, so every image is IN some shadows and OUT of
  others; an image's score is the likelihood ratio of the target's ``phi`` under the IN and the OUT
  Gaussian.

Results are AUC and TPR at 1 % and 0.1 % FPR, each with a bootstrap 95 % interval. With N
non-members no FPR below 1/N can be measured; a TPR at a lower target FPR is the TPR at zero false
positives, and ``min_measurable_fpr`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPRS = (0.01, 0.001)
_BOOTSTRAP = 200


def confidence_scores(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """``phi`` per example: the true class's logit minus the log-sum-exp of the others (N,)."""
    logits = logits.double()
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap 95 % interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates members from non-members."""

    attack: str
    auc: Interval
    tpr_at_1pct_fpr: Interval
    tpr_at_0_1pct_fpr: Interval
    members: int
    non_members: int

    @property
    def min_measurable_fpr(self) -> float:
        return 1.0 / self.non_members


def evaluate_attack(attack: str, member_scores: np.ndarray, non_member_scores: np.ndarray, seed: int = 0) -> AttackResult:
    """AUC and TPR at low FPR of scores where higher means member, with bootstrap intervals.

    Raises:
        ValueError: members or non-members are missing.
    """
    if len(member_scores) == 0 or len(non_member_scores) == 0:
        raise ValueError("a membership attack needs members and non-members")
    rng = np.random.default_rng(seed)
    point = _roc_figures(member_scores, non_member_scores)
    resampled = np.array([
        _roc_figures(rng.choice(member_scores, len(member_scores)), rng.choice(non_member_scores, len(non_member_scores)))
        for _ in range(_BOOTSTRAP)
    ])
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    auc, tpr1, tpr01 = (Interval(float(point[i]), float(low[i]), float(high[i])) for i in range(3))
    return AttackResult(attack, auc, tpr1, tpr01, len(member_scores), len(non_member_scores))


def _roc_figures(members: np.ndarray, non_members: np.ndarray) -> tuple[float, float, float]:
    truth = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    scores = np.r_[members, non_members]
    fpr, tpr, _ = roc_curve(truth, scores)
    at = [float(tpr[fpr <= target].max()) for target in LOW_FPRS]
    return float(roc_auc_score(truth, scores)), at[0], at[1]


def lira_scores(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """Online LiRA with a global variance: log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out) per example.

    Args:
        target: the target model's ``phi`` per example (N,).
        shadow: each shadow model's ``phi`` per example (K, N).
        shadow_in: whether each example was in each shadow's data (K, N) bool.

    An example that no shadow saw IN (or OUT) takes the mean over all examples for that side.
    """
    shadow_in = shadow_in.astype(bool)
    mean_in = _masked_mean(shadow, shadow_in)
    mean_out = _masked_mean(shadow, ~shadow_in)
    spread_in = _global_std(shadow, shadow_in, mean_in)
    spread_out = _global_std(shadow, ~shadow_in, mean_out)
    return norm.logpdf(target, mean_in, spread_in) - norm.logpdf(target, mean_out, spread_out)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(axis=0)
    overall = values[mask].mean() if mask.any() else 0.0
    sums = np.where(mask, values, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def _global_std(values: np.ndarray, mask: np.ndarray, means: np.ndarray) -> float:
    residuals = (values - means[None, :])[mask]
    return float(max(residuals.std(), 1e-3)) if residuals.size > 1 else 1.0
