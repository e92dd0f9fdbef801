"""Soft labels: what a site releases with its images when a teacher labels them, and what it never does.

The teacher learns from the site's training images of the classes it distils, and from nothing else: not its
test images, not a class it holds too few images of. A private method never gets one. The site's operator can
turn them off, and the request cannot make the teacher train longer than the site's policy allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from shared.bundle import open_bundle
from shared.errors import PolicyError
from shared.methods import DMConfig, DPDMConfig, NetworkSpec, SoftLabelSpec
from shared.schemas import DistillRequest
from site_agent.distill import distill, engine
from site_agent.handlers import prepare_release
from site_agent.labelled import LabelledImages
from site_agent.policy import PrivacyLimits, SitePolicy
from tests.conftest import blobs, deployed_site

CPU = torch.device("cpu")
NETWORK = NetworkSpec(depth=2, width=16)
LABELS = SoftLabelSpec(teacher_epochs=3)
QUIET = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                      min_nearest_real_quantile=None)


def _request(soft_labels: SoftLabelSpec | None = LABELS) -> DistillRequest:
    return DistillRequest(run_id="run-1", nonce="ab" * 32, dataset="breastmnist", soft_labels=soft_labels,
                          distill=DMConfig(ipc=2, iterations=2, batch_real=8, network=NETWORK))


def test_the_teacher_learns_from_the_distilled_classes_training_images_alone(monkeypatch) -> None:
    """Three classes, one with too few images to distil: the teacher is trained on the other two classes' images
    only, and the labels give the skipped class no probability at all."""
    train = blobs(num_classes=3, per_class=20, seed=0)
    keep = np.r_[np.arange(40), 40 + np.arange(3)]  # class 2: 3 images, under min_real_per_class
    train = train.subset(keep)
    seen: list[torch.Tensor] = []
    real_teacher = engine.train_teacher

    def spy(real_by_class, *args, **kwargs):
        seen.extend(real_by_class.values())
        return real_teacher(real_by_class, *args, **kwargs)

    monkeypatch.setattr(engine, "train_teacher", spy)
    synthetic = distill(train, 3, DMConfig(ipc=2, iterations=2, batch_real=8, network=NETWORK), CPU, progress=False,
                        min_real_per_class=5, soft_labels=LABELS)
    taught = torch.cat(seen)
    assert len(taught) == 40 and torch.equal(taught, torch.from_numpy(train.images[:40]))
    assert synthetic.soft_labels is not None and synthetic.soft_labels.shape == (4, 3)
    assert torch.all(synthetic.soft_labels[:, 2] == 0)
    torch.testing.assert_close(synthetic.soft_labels.sum(1), torch.ones(4))
    assert synthetic.label_spec == LABELS and synthetic.targets is synthetic.soft_labels


def test_a_private_method_never_releases_soft_labels() -> None:
    """dpdm's guarantee covers its noisy class means, not a teacher: the site keeps classes only, and a request
    that asks for both is refused where it is parsed."""
    train = blobs(per_class=30, seed=1)
    config = DPDMConfig(ipc=2, iterations=2, epsilon=4.0, network=NETWORK)
    synthetic = distill(train, 2, config, CPU, progress=False, soft_labels=LABELS)
    assert synthetic.soft_labels is None and synthetic.label_spec is None
    with pytest.raises(ValidationError, match="dpdm releases no soft labels"):
        DistillRequest(run_id="run-1", nonce="ab" * 32, dataset="breastmnist", distill=config, soft_labels=LABELS)


@pytest.mark.parametrize("allowed", [True, False], ids=["policy-allows", "policy-forbids"])
def test_the_release_carries_soft_labels_only_where_the_sites_policy_allows(keys, tmp_path: Path,
                                                                             allowed: bool) -> None:
    """Sealed and opened at the coordinator: the manifest says how the labels were made and the payload holds
    them; a site whose policy says no releases its images' classes alone, whatever the request asked."""
    coordinator, _ = keys
    settings = deployed_site(tmp_path, SitePolicy(privacy=QUIET, release_soft_labels=allowed))
    release, _ = prepare_release(_request(), settings, progress=False)
    opened = open_bundle(release.sealed, coordinator.private_key, coordinator.verify_key_for, 1 << 24)
    if allowed:
        assert opened.manifest.soft_labels == LABELS and opened.soft_labels is not None
        assert opened.soft_labels.shape == (4, 2)
        np.testing.assert_allclose(opened.soft_labels, release.synthetic.soft_labels.numpy(), atol=1e-3)
    else:
        assert opened.manifest.soft_labels is None and opened.soft_labels is None


def test_a_request_cannot_train_the_teacher_past_the_sites_limit(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(privacy=QUIET, max_train_epochs=100))
    with pytest.raises(PolicyError, match=r"teacher epochs 500 exceeds this site's limit of 100 \(max_train_epochs\)"):
        prepare_release(_request(SoftLabelSpec(teacher_epochs=500)), settings, progress=False)
    assert not (settings.cache_dir / "experts").exists()


def test_the_privacy_report_attacks_a_model_trained_on_the_soft_labels(monkeypatch) -> None:
    """The attacked model must learn what the coordinator's learns: the released soft labels, not the classes."""
    from site_agent.privacy import report

    site_train = blobs(per_class=30, seed=4)
    synthetic = distill(site_train, 2, DMConfig(ipc=2, iterations=2, batch_real=8, network=NETWORK), CPU,
                        progress=False, soft_labels=LABELS)
    trained_on: list[torch.Tensor] = []
    real_trained = report._trained

    def spy(spec, images, labels, *args, **kwargs):
        trained_on.append(labels)
        return real_trained(spec, images, labels, *args, **kwargs)

    monkeypatch.setattr(report, "_trained", spy)
    from shared.datasets import dataset_info
    from site_agent.labelled import SiteImages

    held_out = blobs(per_class=5, seed=5)
    site = SiteImages(dataset_info("breastmnist"), site_train, LabelledImages(held_out.images, held_out.labels))
    report.measure_privacy(synthetic, site, QUIET, CPU)
    assert any(labels is synthetic.soft_labels for labels in trained_on)
