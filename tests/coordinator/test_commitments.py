"""No single site steers the federation's figures (issue 27, part 4): counts beyond a site's signed commitment are
left out, a site with no commitment is not pooled, each site's share is reported, and no sum overflows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.evaluate import SiteEvaluation, aggregate, parse_site_counts
from coordinator.pool import Commitment, PooledSet
from shared.metrics import SCORE_BINS, EvalCounts, log_odds
from shared.schemas import EvaluateReply

LIMIT = 10**9  # the schema's bound on one count


def _honest(seed: int, n: int = 60) -> EvalCounts:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2))
    logits[np.arange(n), labels] += 1.5
    return EvalCounts.from_scores(labels, log_odds(logits))


def _rogue(right: bool) -> EvalCounts:
    """Counts for 10^9 images that agree with each other: all right (accuracy and AUC near 1) or all wrong."""
    half = LIMIT // 2
    histograms = np.zeros((2, 2, SCORE_BINS), np.int64)
    top, bottom = (SCORE_BINS - 1, 0) if right else (0, SCORE_BINS - 1)
    histograms[1, 0, top] = half  # class 1's log-odds of the class 1 images
    histograms[1, 1, bottom] = half
    histograms[0] = histograms[1, ::-1, ::-1]
    confusion = np.diag([half, half]) if right else np.array([[0, half], [half, 0]])
    return EvalCounts(np.array([half, half], np.int64), confusion.astype(np.int64), histograms)


def _parsed(counts: EvalCounts) -> EvalCounts:
    """Through the wire and the door, as the coordinator sees it."""
    return parse_site_counts(EvaluateReply.from_counts(counts).to_metrics(), 2)


@pytest.mark.parametrize("right", [True, False])
def test_a_rogue_sites_inflated_counts_are_left_out_and_move_nothing(right: bool) -> None:
    """One site answering for 10^9 images sets the pooled accuracy near 1 or 0 when believed; held to the 30 test
    images per class it committed to, its reply is rejected with the reason and the figures are the honest sites'."""
    honest = [SiteEvaluation(f"site-{i}", i, _parsed(_honest(i))) for i in range(2)]
    rogue = SiteEvaluation("site-9", 9, _parsed(_rogue(right)))
    commitments = {e.site_id: Commitment((40, 40), tuple(int(c) for c in e.counts.class_counts)) for e in honest}
    commitments["site-9"] = Commitment((40, 40), (30, 30))

    alone = aggregate(honest, 2, commitments)
    held = aggregate([*honest, rogue], 2, commitments)
    believed = aggregate([*honest, rogue], 2)  # no commitments: what the old coordinator did
    assert held.pooled == alone.pooled and held.confusion == alone.confusion
    assert abs(believed.pooled.accuracy - (1.0 if right else 0.0)) < 1e-6  # the attack works without the check
    rejected = {e.site_id: e.problem for e, m in held.sites if m is None}
    assert "more than the 30 its manifest committed to" in rejected["site-9"]
    assert set(held.shares) == {"site-0", "site-1"} and math.isclose(sum(held.shares.values()), 1.0)


def test_a_site_without_commitment_is_not_pooled_and_rounding_is_allowed() -> None:
    """No commitment (no set in the pool, or its policy withheld class counts): left out. Counts within half the
    rounding of a rounded commitment are kept."""
    counts = _parsed(_honest(0, n=60))
    n0, n1 = (int(c) for c in counts.class_counts)
    rounded = Commitment(None, (round(n0 / 10) * 10, round(n1 / 10) * 10), rounding=10)
    report = aggregate([SiteEvaluation("a", 1, counts), SiteEvaluation("b", 2, counts)], 2,
                       {"a": rounded, "b": Commitment((10, 10), None)})
    assert report.num_examples == 60
    assert [(e.site_id, e.problem) for e, _ in report.sites] == [("a", ""), ("b", "rejected: committed no test counts")]


def test_seven_sites_at_the_schema_limit_do_not_overflow() -> None:
    """7 x 10^9 pooled images: the AUC's products reach 10^19, past int64 (it read -0.24 once); exact in Python ints."""
    sites = [SiteEvaluation(f"site-{i}", i, _parsed(_rogue(True))) for i in range(7)]
    commitments = {e.site_id: Commitment(None, (LIMIT // 2, LIMIT // 2)) for e in sites}
    report = aggregate(sites, 2, commitments)
    assert report.num_examples == 7 * LIMIT
    assert report.pooled.auc == 1.0 and report.pooled.accuracy == 1.0 and report.pooled.auc_error_bound == 0.0
    assert all(math.isclose(share, 1 / 7) for share in report.shares.values())


def test_each_sites_share_of_the_prior_shows_an_outlier() -> None:
    """A manifest that commits 10^9 training images writes the prior: the report shows that site's share."""
    import torch

    pooled = PooledSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), {"a": 1, "b": 1},
                       {"a": Commitment((40, 60), (9, 11)), "b": Commitment((LIMIT, LIMIT), (LIMIT, LIMIT)),
                        "c": Commitment(None, None)})
    shares = pooled.prior_shares()
    assert shares["b"] > 0.9999 and shares["c"] == 0.0 and math.isclose(sum(shares.values()), 1.0)
