"""The run's report: each site's signed differential-privacy guarantee is shown beside it."""

from __future__ import annotations

from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report import _site_entry, render_report
from shared.schemas import DPGuarantee


def test_report_shows_epsilon_and_delta_per_private_site() -> None:
    """A site whose manifest carries a guarantee gets a 'DP: ε=…, δ=…' line; a non-private site gets none."""
    guarantee = DPGuarantee(epsilon=4.0, delta=1e-5, accountant="dp-accounting PLD", noise_multiplier=1.081,
                            sensitivity=1.118)
    outcomes = [SiteOutcome(1, "site-0", OutcomeStatus.ACCEPTED, bundle_bytes=10, dp=guarantee),
                SiteOutcome(2, "site-1", OutcomeStatus.ACCEPTED, bundle_bytes=10)]
    sites = [_site_entry(o) for o in outcomes]
    assert sites[0]["dp"]["epsilon"] == 4.0 and sites[1]["dp"] is None
    summary = {"run_id": "r", "status": "completed", "dataset": "d", "method": "dpdm", "ipc": 1, "iterations": 1,
               "sites_accepted": 2, "sites_expected": 2, "stage_seconds": {}, "sites": sites}
    text = render_report(summary)
    assert "- site-0: DP: ε=4, δ=1e-05 (gaussian mechanism, dp-accounting PLD, noise multiplier 1.081)" in text
    assert "site-1: DP" not in text
