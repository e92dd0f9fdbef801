"""The privacy report: nearest-neighbour memorisation, membership inference, the gate, the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.methods import DMConfig, NetworkSpec
from shared.models import ConvNet
from shared.training import TrainSettings, predict_logits, train_classifier
from site_agent.distill import distill
from site_agent.labelled import LabelledImages, SiteImages
from site_agent.policy import PrivacyLimits
from site_agent.privacy.gate import ReleaseBlocked, enforce, failed_limits
from site_agent.privacy.membership import confidence_scores, evaluate_attack, lira_scores
from site_agent.privacy.memorisation import memorisation
from site_agent.privacy.page import write_report
from site_agent.privacy.report import measure_privacy
from tests.conftest import blobs

CPU = torch.device("cpu")
NET = NetworkSpec(depth=2, width=16)


def _embed_net(train: LabelledImages) -> ConvNet:
    model = ConvNet(1, 2, 16, NET)
    return train_classifier(model, torch.from_numpy(train.images), torch.from_numpy(train.labels),
                            TrainSettings(epochs=10, augment=False), CPU)


def _noise_distilled(train: LabelledImages):
    config = DMConfig(ipc=3, iterations=30, batch_real=32, network=NET)
    return distill(train, 2, config, CPU, progress=False)


def test_nearest_neighbour_check_flags_a_copied_and_a_noised_real_image() -> None:
    train = blobs(per_class=40, seed=0)
    synthetic = _noise_distilled(train)
    real = torch.from_numpy(train.images)
    copied = synthetic.images.clone()
    copied[0] = real[3]  # class 0's image 3, verbatim
    copied[4] = real[45] + 0.01 * torch.randn_like(real[45])  # class 1's image 45, barely noised
    embed = _embed_net(train).embed

    clean = memorisation(synthetic.images, synthetic.labels, real, torch.from_numpy(train.labels), embed, 0.01)
    leaky = memorisation(copied, synthetic.labels, real, torch.from_numpy(train.labels), embed, 0.01)

    assert clean.flagged == 0
    assert [i for i, image in enumerate(leaky.images) if image.flagged] == [0, 4]
    assert leaky.images[0].pixel_l2 == pytest.approx(0, abs=1e-5) and leaky.images[0].ssim == pytest.approx(1)
    assert leaky.min_rank == 0


def test_duplicates_among_synthetic_images_are_counted() -> None:
    train = blobs(per_class=20, seed=1)
    synthetic = _noise_distilled(train)
    doubled = synthetic.images.clone()
    doubled[1] = doubled[0]
    found = memorisation(doubled, synthetic.labels, torch.from_numpy(train.images), torch.from_numpy(train.labels),
                         _embed_net(train).embed, 0.01)
    assert found.duplicates == 1


def _scores_of(model: ConvNet, data: LabelledImages) -> np.ndarray:
    return confidence_scores(predict_logits(model, torch.from_numpy(data.images), CPU), torch.from_numpy(data.labels))


def _noise_task(n: int, seed: int) -> LabelledImages:
    """Images and labels without any pattern: only memorisation can fit them."""
    rng = np.random.default_rng(seed)
    return LabelledImages(rng.uniform(-1, 1, (n, 1, 16, 16)).astype(np.float32), rng.integers(0, 2, n).astype(np.int64))


def test_membership_attack_is_chance_for_a_model_that_saw_neither_side_and_high_when_overfit() -> None:
    members, non_members, elsewhere = _noise_task(60, 1), _noise_task(60, 2), _noise_task(60, 3)
    settings = TrainSettings(epochs=60, batch_size=60, augment=False)

    def fitted(data: LabelledImages) -> ConvNet:
        return train_classifier(ConvNet(1, 2, 16, NET), torch.from_numpy(data.images), torch.from_numpy(data.labels),
                                settings, CPU)

    blind, overfit = fitted(elsewhere), fitted(members)
    chance = evaluate_attack("threshold", _scores_of(blind, members), _scores_of(blind, non_members))
    strong = evaluate_attack("threshold", _scores_of(overfit, members), _scores_of(overfit, non_members))

    assert chance.auc.low < 0.5 < chance.auc.high and abs(chance.auc.value - 0.5) < 0.15
    assert strong.auc.value > 0.8 and strong.auc.low > 0.7
    assert strong.tpr_at_1pct_fpr.value > chance.tpr_at_1pct_fpr.value
    assert strong.min_measurable_fpr == pytest.approx(1 / 60)


def test_lira_separates_members_by_their_in_and_out_distributions() -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 8
    gain = rng.uniform(0.5, 3.0, n)  # how much being trained on an example raises its score
    base = rng.normal(0, 2, n)  # examples differ in difficulty: what LiRA calibrates away
    shadow_in = rng.random((k, n)) < 0.5
    shadow = base + gain * shadow_in + rng.normal(0, 0.3, (k, n))
    member = rng.random(n) < 0.5
    target = base + gain * member + rng.normal(0, 0.3, n)

    lira = lira_scores(target, shadow, shadow_in)
    calibrated = evaluate_attack("lira", lira[member], lira[~member])
    raw = evaluate_attack("threshold", target[member], target[~member])
    assert calibrated.auc.value > 0.85 > raw.auc.value

    unrelated = rng.normal(0, 2, n)
    assert abs(evaluate_attack("lira", *_split(lira_scores(unrelated, shadow, shadow_in), member)).auc.value - 0.5) < 0.1


def _split(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return scores[member], scores[~member]


def _site(per_class: int = 30) -> SiteImages:
    from shared.datasets import dataset_info

    every = blobs(per_class=per_class + 10, seed=4)  # one draw: train and test share the class patterns
    held_out = np.r_[np.arange(10), per_class + 10 + np.arange(10)]
    train = np.setdiff1d(np.arange(len(every)), held_out)
    return SiteImages(dataset_info("breastmnist"), every.subset(train), every.subset(held_out))


def test_report_measures_attacks_against_the_reference_and_within_time_for_shadows(tmp_path: Path) -> None:
    site = _site()
    synthetic = _noise_distilled(site.train)
    limits = PrivacyLimits(shadow_models=2, train_epochs=20)
    report = measure_privacy(synthetic, site, limits, CPU)
    s = report.summary

    assert s.members == 60 and s.non_members == 20 and s.shadow_models == 2
    assert s.threshold_attack is not None and s.reference_threshold_attack is not None
    assert s.lira is not None and s.reference_lira is not None
    assert 0 <= s.threshold_attack.auc.low <= s.threshold_attack.auc.value <= s.threshold_attack.auc.high <= 1
    assert s.site_accuracy is not None and s.site_accuracy > 0.8  # separable classes: the set is useful
    assert s.nearest_real_flagged == 0

    json_path, html_path = write_report(report, synthetic, site.info.label_names, limits, [], tmp_path / "r")
    document = json.loads(json_path.read_text())
    assert document["summary"]["members"] == 60 and len(document["nearest_real"]) == len(synthetic.labels)
    page = html_path.read_text()
    assert "Membership inference" in page and "data:image/png;base64," in page


def test_shadow_models_stop_at_the_time_limit() -> None:
    site = _site()
    synthetic = _noise_distilled(site.train)
    report = measure_privacy(synthetic, site, PrivacyLimits(shadow_models=8, train_epochs=5, max_seconds=1e-3), CPU)
    assert report.summary.shadow_models < 8 and report.summary.lira is None
    assert any("LiRA not run" in note for note in report.notes)


def test_a_site_without_held_out_images_cannot_pass_an_mia_limit() -> None:
    site = _site()
    empty = SiteImages(site.info, site.train, site.train.subset(np.array([], dtype=np.int64)))
    synthetic = _noise_distilled(site.train)
    report = measure_privacy(synthetic, empty, PrivacyLimits(shadow_models=0, train_epochs=5), CPU)
    assert report.summary.threshold_attack is None
    assert "max_mia_auc" in failed_limits(report.summary, PrivacyLimits())
    assert failed_limits(report.summary, PrivacyLimits(max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None)) == []


def test_gate_names_only_the_failed_limits() -> None:
    site = _site()
    synthetic = _noise_distilled(site.train)
    copied = synthetic.__class__(torch.from_numpy(site.train.images[:6]), synthetic.labels, synthetic.classes,
                                 synthetic.config, synthetic.loss_history, synthetic.seconds)
    report = measure_privacy(copied, site, PrivacyLimits(shadow_models=0, train_epochs=5), CPU)
    with pytest.raises(ReleaseBlocked) as blocked:
        enforce(report.summary, PrivacyLimits(max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None))
    assert blocked.value.failed == ["min_nearest_real_quantile"]
    assert not any(ch.isdigit() for ch in str(blocked.value))  # no measured value travels to the coordinator


def test_a_blocked_release_is_never_sealed_and_leaves_its_report_at_the_site(keys, tmp_path: Path, monkeypatch) -> None:
    """Real-image initialisation, allowed by the policy, still cannot pass the nearest-neighbour limit."""
    from shared.methods import InitMode
    from shared.schemas import DistillRequest
    from site_agent import handlers
    from site_agent.policy import SitePolicy
    from site_agent.privacy.page import REPORT_HTML, REPORT_JSON, privacy_report_folder
    from site_agent.settings import SiteSettings

    rng = np.random.default_rng(0)
    patterns = rng.integers(40, 215, (2, 28, 28))
    splits = {}
    for split, n in (("train", 40), ("test", 20)):
        labels = np.repeat([0, 1], n // 2)
        splits[f"{split}_images"] = np.clip(patterns[labels] + rng.normal(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
        splits[f"{split}_labels"] = labels
    np.savez(tmp_path / "export.npz", **splits)
    policy = SitePolicy(allow_real_init=True, privacy=PrivacyLimits(shadow_models=0, train_epochs=5))
    settings = SiteSettings(site_id="site-0", key_dir=tmp_path / "keys" / "site-0", data_root=str(tmp_path / "export.npz"),
                            policy=policy, device="cpu", verify_md5=True, cache_dir=tmp_path / "cache")
    request = DistillRequest(run_id="r1", nonce="ef" * 32, dataset="breastmnist",
                             distill=DMConfig(ipc=2, iterations=1, lr_img=1e-6, batch_real=8, init=InitMode.REAL,
                                              network=NET))

    def never(*args, **kwargs):
        raise AssertionError("a blocked release was sealed")

    monkeypatch.setattr(handlers, "seal_described", never)
    with pytest.raises(ReleaseBlocked, match="^release blocked by this site's privacy policy") as blocked:
        handlers.answer_distill(request, settings, progress=False)
    assert "min_nearest_real_quantile" in blocked.value.failed  # site-local, as is its figure:
    assert "4 synthetic images closer" in blocked.value.local_detail and "4" not in str(blocked.value)
    folder = privacy_report_folder(settings.cache_dir, request.run_id, request.nonce)
    report = json.loads((folder / REPORT_JSON).read_text())
    assert "min_nearest_real_quantile" in report["failed_limits"] and (folder / REPORT_HTML).is_file()
    assert report["summary"]["nearest_real_flagged"] == 4
    # The site's audit log records the request, the set, the report and the policy's block, and no release.
    from site_agent import audit

    entries = audit.verify(settings.cache_dir)
    assert [e.event.value for e in entries] == ["request_received", "set_built", "privacy_report", "decision"]
    assert "min_nearest_real_quantile" in entries[2].details["failed"] and entries[2].details["nearest_real_flagged"] == 4
    assert (entries[3].actor, entries[3].details["decision"]) == ("policy", "blocked")
    assert "min_nearest_real_quantile: 4 synthetic images" in entries[-1].details["why"]  # the site's own record
