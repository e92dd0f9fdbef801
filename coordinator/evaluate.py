"""Federated evaluation: sum the counts each site reports for the global model, then compute pooled metrics.

Every global figure is computed from the summed counts (``shared.metrics``), so it is the metric of the
whole pooled test set. Nothing is averaged over the sites where a metric happens to be defined. A site's
counts are pooled only within its commitment (``coordinator.pool.Commitment``): counts beyond the test
images per class it signed are rejected, and so are those of a site that signed none. Each site's share
of the pooled test images is reported, so that one that weighs in heavily is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from coordinator.pool import Commitment
from shared.errors import InvalidReply
from shared.fields import first_problem
from shared.metrics import EvalCounts
from shared.schemas import EvaluateReply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    """The figures of one set of counts (a site's, or all sites' summed); NaN where undefined."""

    accuracy: float
    balanced_accuracy: float
    auc: float
    auc_error_bound: float  # |auc - exact AUC of the same scores| is at most this (binning)
    majority_rate: float  # accuracy of always predicting the most frequent class
    recall: list[float]  # per class
    class_counts: list[int]
    num_examples: int

    @classmethod
    def of(cls, counts: EvalCounts) -> Metrics:
        return cls(
            accuracy=counts.accuracy(),
            balanced_accuracy=counts.balanced_accuracy(),
            auc=counts.auc(),
            auc_error_bound=counts.auc_error_bound(),
            majority_rate=counts.majority_rate(),
            recall=counts.recall(),
            class_counts=counts.class_counts.tolist(),
            num_examples=counts.num_examples,
        )


@dataclass(frozen=True)
class SiteEvaluation:
    """One site's answer to ``evaluate``: its counts, or why there are none (kept in the report)."""

    site_id: str
    node_id: int
    counts: EvalCounts | None
    problem: str = ""
    epsilon: float | None = None  # the privacy loss of the site's answer (its noise); None: exact counts


@dataclass(frozen=True)
class EvalReport:
    pooled: Metrics  # over all test images of all sites that answered
    confusion: list[list[int]]  # pooled, rows = true class
    sites: list[tuple[SiteEvaluation, Metrics | None]]  # each site's own figures, for the per-site table
    shares: dict[str, float] = field(default_factory=dict)  # each pooled site's share of the pooled test images

    @property
    def num_examples(self) -> int:
        return self.pooled.num_examples


def parse_site_counts(metrics: Mapping[str, Any], num_classes: int) -> EvalCounts:
    """A site's evaluation reply, checked field by field (its ``epsilon`` too) and against itself.

    Raises:
        InvalidReply: a field is missing, not a count, out of range, or the counts do not add up.
    """
    try:
        return EvaluateReply.model_validate(dict(metrics)).counts(num_classes)
    except ValidationError as exc:
        raise InvalidReply(f"evaluation reply {first_problem(exc)}") from None
    except ValueError as exc:
        raise InvalidReply(f"evaluation reply: {exc}") from None


def aggregate(
    evaluations: list[SiteEvaluation], num_classes: int, commitments: Mapping[str, Commitment] | None = None
) -> EvalReport:
    """Pooled metrics of the summed counts of every site that answered with valid counts, and each site's own.

    With ``commitments`` (by site id), a site's counts beyond its committed test counts, or of a site with
    none, are left out and listed with the reason; None pools every answer (one process scored them all).
    """
    if commitments is not None:
        evaluations = [held_to_commitment(e, commitments.get(e.site_id)) for e in evaluations]
    total = EvalCounts.empty(num_classes)
    for evaluation in evaluations:
        if evaluation.counts is not None:
            total = total + evaluation.counts
    ordered = sorted(evaluations, key=lambda e: e.site_id)
    per_site = [(e, None if e.counts is None else Metrics.of(e.counts)) for e in ordered]
    everyone = total.num_examples
    shares = {e.site_id: e.counts.num_examples / everyone for e in ordered if e.counts is not None and everyone}
    return EvalReport(Metrics.of(total), total.confusion.tolist(), per_site, shares)


def held_to_commitment(evaluation: SiteEvaluation, commitment: Commitment | None) -> SiteEvaluation:
    """The evaluation as is when its counts are within ``commitment``; else without counts, and why."""
    if evaluation.counts is None:
        return evaluation
    why = "committed no test counts" if commitment is None else commitment.excess(evaluation.counts.class_counts,
                                                                                    "test")
    if not why:
        return evaluation
    log.warning("site %s (node %d): evaluation counts left out: %s", evaluation.site_id, evaluation.node_id, why)
    return replace(evaluation, counts=None, problem=f"rejected: {why}")
