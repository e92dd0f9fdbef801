"""The run's report: each site's signed differential-privacy guarantee is shown beside it."""

from __future__ import annotations

from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report import _site_entry, render_report
from shared.manifest import DPGuarantee


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


def test_a_manifest_naming_an_unknown_accountant_is_refused() -> None:
    """The accountant's name is printed in report.md: free text there could carry Markdown (an image beacon)."""
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DPGuarantee(epsilon=1.0, delta=1e-5, accountant="PLD ![x](https://evil.example/beacon.png)",
                    noise_multiplier=1.0, sensitivity=1.0)


def test_the_headline_is_balanced_accuracy_auc_and_every_classs_recall_and_names_a_neglected_class() -> None:
    """A model that never finds a class with enough test images is called out at the top, in words."""
    from coordinator.report import headline

    g = {"class_names": ["benign", "melanoma", "rare"], "class_counts": [1300, 223, 12], "recall": [0.99, 0.0, 0.0],
         "balanced_accuracy": 0.33, "auc": 0.82, "accuracy": 0.85, "majority_rate": 0.85, "num_examples": 1535,
         "correction": "tuned-logit-adjust"}
    uncorrected = {**g, "recall": [0.6, 0.5, 0.25], "balanced_accuracy": 0.45}
    lines = headline(g, uncorrected)
    assert lines[0].startswith("**melanoma: the global model finds 0.000 of its 223 test images.**")
    assert not any(line.startswith("**rare") for line in lines)  # 12 test images: too few to judge
    text = "\n".join(lines)
    assert "Balanced accuracy **0.330**, macro AUC **0.820**" in text and "majority class: 0.850" in text
    assert "| melanoma | 223 | 0.000 | 0.500 |" in text  # what the correction cost this class
    plain = headline({**g, "correction": "none", "recall": [0.6, 0.5, 0.25]}, None)
    assert not plain[0].startswith("**") and "| melanoma | 223 | 0.500 |" in "\n".join(plain)
