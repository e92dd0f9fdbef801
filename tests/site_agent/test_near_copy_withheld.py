"""The near-copy check bounds every released image: a near copy of a local image is withheld, and what goes out
holds none; a site whose policy says so, a set of nothing but copies and a differentially private set are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.bundle import open_bundle
from shared.methods import DMConfig, InitMode, NetworkSpec
from shared.schemas import DistillRequest, MetricKey
from site_agent import audit, handlers
from site_agent.data import load_site_images
from site_agent.distill.accounting import DPRelease
from site_agent.handlers import prepare_release, without_near_copies
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.privacy.gate import BLOCKED, ReleaseBlocked
from site_agent.privacy.near_copy import nearest_real_similarities, nearest_real_similarity
from tests.conftest import blobs, deployed_site, make_request, make_synthetic

QUIET = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                      min_nearest_real_quantile=None)


def _with_copies(real: np.ndarray, copied: list[int], labels: list[int], soft: bool = False):
    """A 2-class set of noise in which the images at positions ``copied`` are shifted copies of real images."""
    images = np.random.default_rng(1).normal(size=(len(labels), *real.shape[1:])).astype(np.float32)
    for slot, source in enumerate(copied):
        images[slot] = np.roll(real[source], 1, axis=-1)
    synthetic = make_synthetic(make_request(ipc=3), images=images, labels=labels)
    if soft:
        probabilities = torch.linspace(0.1, 0.9, len(labels))
        synthetic = dataclasses.replace(synthetic, soft_labels=torch.stack([1 - probabilities, probabilities], 1))
    return synthetic


def test_a_near_copy_is_withheld_and_the_rest_of_the_set_goes_out() -> None:
    """One shifted copy of a patient's image among noise: it is withheld with its soft label, nothing released
    comes near a real image, and the other five images go out in their order."""
    train = blobs(num_classes=2, per_class=20, size=28)
    synthetic = _with_copies(train.images, copied=[7], labels=[0, 0, 0, 1, 1, 1], soft=True)
    released = without_near_copies(synthetic, train, SitePolicy(), InitMode.NOISE)
    assert len(released.labels) == 5 and released.labels.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(released.images, synthetic.images[1:])
    assert torch.equal(released.soft_labels, synthetic.soft_labels[1:])
    assert nearest_real_similarity(released.images, torch.from_numpy(train.images)) < 0.5  # the copy scored 1
    assert released.classes == [0, 1]


def test_a_class_whose_every_image_is_a_copy_is_left_out() -> None:
    """Both class-1 images copy real ones: the set goes out with class 0 only, as a class too small to distil."""
    train = blobs(num_classes=2, per_class=20, size=28)
    synthetic = _with_copies(train.images, copied=[25, 30], labels=[1, 1, 0, 0])
    released = without_near_copies(synthetic, train, SitePolicy(), InitMode.NOISE)
    assert released.labels.tolist() == [0, 0] and released.classes == [0]


def test_refused_whole_when_the_policy_says_so_when_all_are_copies_and_for_a_dp_set() -> None:
    """Withholding is the default; a site may refuse any set with a near copy instead. A set of nothing but
    copies, and a dpdm set (whose guarantee a choice made by looking at real images would break), are refused
    under either policy, and the message gives no figure."""
    train = blobs(num_classes=2, per_class=20, size=28)
    one_copy = _with_copies(train.images, copied=[3], labels=[0, 0, 1, 1])
    with pytest.raises(ReleaseBlocked) as strict:
        without_near_copies(one_copy, train, SitePolicy(withhold_near_copies=False), InitMode.NOISE)
    assert str(strict.value) == BLOCKED and "1 of 4 synthetic images" in strict.value.local_detail
    all_copies = _with_copies(train.images, copied=[0, 1, 20, 21], labels=[0, 0, 1, 1])
    with pytest.raises(ReleaseBlocked, match=BLOCKED):
        without_near_copies(all_copies, train, SitePolicy(), InitMode.NOISE)
    dp = DPRelease(epsilon=4.0, delta=1e-5, noise_multiplier=1.0, sigma=1.0, sensitivity=1.0, mechanism="gaussian",
                   accountant="pld", classes=[0, 1], noisy_class_counts={0: 20, 1: 20})
    private = dataclasses.replace(one_copy, dp=dp)
    with pytest.raises(ReleaseBlocked, match=BLOCKED):
        without_near_copies(private, train, SitePolicy(), InitMode.NOISE)


def test_per_image_similarity_matches_the_sets_closest() -> None:
    """Each image's closest correlation, over shifts; the set's is their maximum."""
    real = torch.randn(30, 1, 28, 28)
    synthetic = torch.cat([real[:2].roll(2, 2), torch.randn(3, 1, 28, 28)])
    each = nearest_real_similarities(synthetic, real)
    assert each.shape == (5,) and (each[:2] > 0.99).all() and (each[2:] < 0.5).all()
    assert float(each.max()) == nearest_real_similarity(synthetic, real)


def test_a_deployed_site_seals_no_near_copy_and_audits_what_it_withheld(keys, tmp_path: Path, monkeypatch) -> None:
    """End to end at a deployed site: a distillation that came out with a copy of a training image among its
    set. The coordinator opens a bundle without it, and the site's audit log says how many images were withheld;
    a site that refuses such sets seals nothing."""
    coordinator, _ = keys
    settings = deployed_site(tmp_path, SitePolicy(privacy=QUIET, min_real_per_class=4))
    train = load_site_images("breastmnist", settings.data_root).train
    request = DistillRequest(run_id="run-1", nonce="cd" * 32, dataset="breastmnist",
                             distill=DMConfig(ipc=2, iterations=1, batch_real=8, network=NetworkSpec(depth=2, width=16)))
    copied = dataclasses.replace(_with_copies(train.images, copied=[13], labels=[0, 0, 1, 1]), config=request.distill)
    monkeypatch.setattr(handlers, "distill", lambda *args, **kwargs: copied)
    release, metrics = prepare_release(request, settings, progress=False)
    opened = open_bundle(release.sealed, coordinator.private_key, coordinator.verify_key_for, 1 << 24)
    assert opened.labels.tolist() == [0, 1, 1] and metrics[MetricKey.SYNTHETIC_IMAGES.value] == 3
    similarity = nearest_real_similarities(torch.from_numpy(opened.images), torch.from_numpy(train.images))
    assert (similarity <= settings.policy.max_real_similarity).all()
    withheld = [e for e in audit.verify(settings.cache_dir) if e.details.get("decision") == "withheld near copies"]
    assert [e.details["images"] for e in withheld] == [1]

    strict = dataclasses.replace(settings, policy=SitePolicy(privacy=QUIET, min_real_per_class=4,
                                                             withhold_near_copies=False))
    other = request.model_copy(update={"run_id": "run-2", "nonce": "ef" * 32})
    with pytest.raises(ReleaseBlocked, match=BLOCKED):
        prepare_release(other, strict, progress=False)
