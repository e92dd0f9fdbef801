"""Federated evaluation: combine the metrics sites report for the global model."""

from __future__ import annotations

from dataclasses import dataclass

from shared.metrics import weighted_mean


@dataclass(frozen=True)
class SiteEvaluation:
    site_id: str
    node_id: int
    accuracy: float
    auc: float  # NaN when the site's test split holds one class only
    num_examples: int


@dataclass(frozen=True)
class EvalReport:
    accuracy: float  # example-weighted over sites
    auc: float  # example-weighted over sites where AUC is defined
    num_examples: int
    sites: list[SiteEvaluation]


def aggregate(evaluations: list[SiteEvaluation]) -> EvalReport:
    """Example-weighted accuracy and AUC over the sites that answered."""
    weights = [e.num_examples for e in evaluations]
    return EvalReport(
        accuracy=weighted_mean([e.accuracy for e in evaluations], weights),
        auc=weighted_mean([e.auc for e in evaluations], weights),
        num_examples=sum(weights),
        sites=sorted(evaluations, key=lambda e: e.site_id),
    )
