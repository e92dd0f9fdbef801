"""The run's report: each site's signed differential-privacy guarantee and preprocessing are shown beside it."""

from __future__ import annotations

from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report import render_report
from coordinator.summary import GlobalEvaluation, PooledMetrics, RunStatus, RunSummary, SiteEntry
from shared.config import RunConfig
from shared.manifest import DPGuarantee, Preprocessing


def _summary(sites: list[SiteEntry], method: str = "dpdm") -> RunSummary:
    summary = RunSummary.begun(RunConfig(method=method, ipc=1, iterations=1, sites=len(sites)), "r", RunStatus.COMPLETED)
    return summary.model_copy(update={"sites": sites, "sites_accepted": len(sites)})


def test_report_shows_epsilon_and_delta_per_private_site() -> None:
    """A site whose manifest carries a guarantee gets a 'DP: ε=…, δ=…' line; a non-private site gets none."""
    guarantee = DPGuarantee(epsilon=4.0, delta=1e-5, accountant="dp-accounting PLD", noise_multiplier=1.081,
                            sensitivity=1.118)
    outcomes = [SiteOutcome(1, "site-0", OutcomeStatus.ACCEPTED, bundle_bytes=10, dp=guarantee),
                SiteOutcome(2, "site-1", OutcomeStatus.ACCEPTED, bundle_bytes=10)]
    sites = [SiteEntry.of(o) for o in outcomes]
    assert sites[0].dp is not None and sites[0].dp.epsilon == 4.0 and sites[1].dp is None
    text = render_report(_summary(sites))
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

    g = GlobalEvaluation(class_names=["benign", "melanoma", "rare"], class_counts=[1300, 223, 12],
                         recall=[0.99, 0.0, 0.0], balanced_accuracy=0.33, auc=0.82, accuracy=0.85, majority_rate=0.85,
                         num_examples=1535, auc_error_bound=0.01, confusion=[], correction="tuned-logit-adjust")
    uncorrected = PooledMetrics.model_validate({**g.model_dump(include=set(PooledMetrics.model_fields)),
                                                "recall": [0.6, 0.5, 0.25], "balanced_accuracy": 0.45})
    lines = headline(g, uncorrected)
    assert lines[0].startswith("**melanoma: the global model finds 0.000 of its 223 test images.**")
    assert not any(line.startswith("**rare") for line in lines)  # 12 test images: too few to judge
    text = "\n".join(lines)
    assert "Balanced accuracy **0.330**, macro AUC **0.820**" in text and "majority class: 0.850" in text
    assert "| melanoma | 223 | 0.000 | 0.500 |" in text  # what the correction cost this class
    plain = headline(g.model_copy(update={"correction": "none", "recall": [0.6, 0.5, 0.25]}), None)
    assert not plain[0].startswith("**") and "| melanoma | 223 | 0.500 |" in "\n".join(plain)


def test_the_report_says_how_each_site_resized_its_images_in_one_line() -> None:
    """A manifest's preprocessing becomes one sentence naming each site that resized, and how; text stays inert."""
    resized = Preprocessing(smallest_source=(128, 128), largest_source=(128, 128), cropped=False, resized_to=28)
    cropped = Preprocessing(smallest_source=(360, 363), largest_source=(369, 366), cropped=True, resized_to=28)
    sites = [SiteEntry(site_id="site-a", node_id=1, status=OutcomeStatus.ACCEPTED, preprocessing=resized),
             SiteEntry(site_id="site-b", node_id=2, status=OutcomeStatus.ACCEPTED, preprocessing=cropped),
             SiteEntry(site_id="site-c", node_id=3, status=OutcomeStatus.ACCEPTED),
             SiteEntry(site_id="site-d", node_id=4, status=OutcomeStatus.REJECTED, reason="bad bundle")]
    lines = [line for line in render_report(_summary(sites, "idm")).splitlines() if line.startswith("Preprocessing")]
    assert lines == [("Preprocessing, as each manifest records it: site-a resized its 128x128 images to 28x28 "
                      "(LANCZOS); site-b centre-cropped to a square and resized its 363x360 to 366x369 images to "
                      "28x28 (LANCZOS); the other accepted sites' images were already 28x28.")]
    hostile = SiteEntry(site_id="x](http://evil.example/p.png)\n| row |", node_id=5, status=OutcomeStatus.ACCEPTED,
                        preprocessing=resized)
    [line] = [line for line in render_report(_summary([hostile], "idm")).splitlines() if line.startswith("Preprocess")]
    assert "](" not in line and "|" not in line


def test_no_preprocessing_line_when_every_site_kept_its_size() -> None:
    """Sites whose images were already at the run's size add nothing to the report."""
    sites = [SiteEntry(site_id="site-a", node_id=1, status=OutcomeStatus.ACCEPTED)]
    assert "Preprocessing" not in render_report(_summary(sites, "idm"))


def test_an_accepted_bundles_preprocessing_reaches_the_summary() -> None:
    """The manifest's preprocessing travels from the site's outcome into summary.json and back."""
    resized = Preprocessing(smallest_source=(64, 64), largest_source=(64, 64), cropped=False, resized_to=28)
    entry = SiteEntry.of(SiteOutcome(1, "site-a", OutcomeStatus.ACCEPTED, preprocessing=resized))
    summary = _summary([entry], "idm")
    assert RunSummary.model_validate_json(summary.to_json()).sites[0].preprocessing == resized


def test_the_report_says_which_sets_carry_soft_labels_and_how_they_were_made() -> None:
    """One line, from the signed manifests: the accepted sets grouped by how their labels were made; the
    manifest's teacher settings travel through summary.json."""
    from shared.methods import SoftLabelSpec

    spec = SoftLabelSpec(teacher_epochs=30, temperature=2.0)
    sites = [SiteEntry.of(SiteOutcome(1, "site-a", OutcomeStatus.ACCEPTED, soft_labels=spec)),
             SiteEntry(site_id="site-b", node_id=2, status=OutcomeStatus.ACCEPTED),
             SiteEntry(site_id="site-c", node_id=3, status=OutcomeStatus.ACCEPTED, soft_labels=spec),
             SiteEntry(site_id="site-d", node_id=4, status=OutcomeStatus.REJECTED, reason="bad bundle")]
    [line] = [line for line in render_report(_summary(sites, "idm")).splitlines() if line.startswith("Labels")]
    assert line == ("Labels, as each manifest records them: site-a, site-c: soft labels from a teacher the site "
                    "trained for 30 epochs, temperature 2; site-b: classes only.")
    assert RunSummary.model_validate_json(_summary(sites, "idm").to_json()).sites[0].soft_labels == spec

