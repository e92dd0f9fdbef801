"""Starting a synthetic set from averages of a class's images (init 'means'): no starting image is any one patient's
image, a class too small to average starts from noise, the starts keep the class's variety, and a hospital starts
from them only when its policy allows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.errors import PolicyError
from shared.methods import MEAN_INIT_GROUP, DMConfig, IDMConfig, InitMode
from site_agent.distill.engine import distill
from site_agent.distill.matching import initial_images
from site_agent.handlers import without_near_copies
from site_agent.policy import SitePolicy
from site_agent.privacy.near_copy import nearest_real_similarity
from tests.conftest import blobs, make_request


def _starts(real_by_class: dict[int, torch.Tensor], ipc: int, seed: int = 0) -> torch.Tensor:
    return initial_images(real_by_class, ipc, InitMode.MEANS, torch.Generator().manual_seed(seed))


def test_no_starting_image_is_one_patients_image_even_for_an_outlier() -> None:
    """Unrelated images (noise) put most k-means clusters at one or two images, and an outlier alone in its cluster
    would start as a copy of itself; every start instead averages at least ten images, so none correlates with any
    real image more than an average of ten unrelated images does (about 1/sqrt(10))."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.normal(0, 0.3, (25, 1, 16, 16)).astype(np.float32))
    outlier = torch.linspace(-1, 1, 256).view(1, 16, 16)
    images[0] = outlier * 0.3 / outlier.std()  # a case unlike the rest, at the others' contrast
    starts = _starts({0: images}, ipc=10)
    assert starts.shape == (10, 1, 16, 16)
    assert nearest_real_similarity(starts, images, max_shift=0) < 0.5
    assert nearest_real_similarity(images[:1], images, max_shift=0) > 0.99  # what a copy would score


def test_a_class_too_small_to_average_starts_from_noise() -> None:
    """A class with fewer than ten images (a site whose policy distils classes that small) starts from noise."""
    small = torch.from_numpy(blobs(num_classes=1, per_class=MEAN_INIT_GROUP - 1).images)
    large = torch.from_numpy(blobs(num_classes=1, per_class=40, seed=1).images)
    starts = _starts({0: small, 1: large}, ipc=4)
    assert nearest_real_similarity(starts[:4], small, max_shift=0) < 0.5
    assert nearest_real_similarity(starts[4:], large, max_shift=0) > 0.9  # the large class starts near its images


def test_the_starts_keep_a_class_s_variety_instead_of_its_one_mean() -> None:
    """A class of two kinds of image (two stains, two cell sizes) starts with images of both kinds, where one class
    mean would be neither."""
    two_kinds = blobs(num_classes=2, per_class=40, seed=3)
    merged = torch.from_numpy(two_kinds.images)  # both kinds under one class
    starts = _starts({0: merged}, ipc=4)
    kinds = [torch.from_numpy(two_kinds.images[two_kinds.labels == k]).mean(0).flatten() for k in (0, 1)]
    nearest = {int(torch.stack([((s.flatten() - k) ** 2).sum() for k in kinds]).argmin()) for s in starts}
    assert nearest == {0, 1}


def test_a_class_of_fewer_images_than_its_starts_still_gets_every_start() -> None:
    """ipc 50 of a class of 12 images (both within a site's default caps): every start is an average of ten."""
    images = torch.from_numpy(np.random.default_rng(1).normal(0, 0.3, (12, 1, 16, 16)).astype(np.float32))
    starts = _starts({0: images}, ipc=50)
    assert starts.shape == (50, 1, 16, 16)
    assert nearest_real_similarity(starts, images, max_shift=0) < 0.5  # a copy scores 1


def test_the_same_seed_gives_the_same_starts_and_another_seed_other_ones() -> None:
    real = {0: torch.from_numpy(blobs(num_classes=1, per_class=60).images)}
    assert torch.equal(_starts(real, 5, seed=1), _starts(real, 5, seed=1))
    assert not torch.equal(_starts(real, 5, seed=1), _starts(real, 5, seed=2))


@pytest.mark.parametrize("config", [DMConfig(ipc=3, iterations=3, batch_real=16, init=InitMode.MEANS),
                                    IDMConfig(ipc=3, iterations=3, batch_real=16, init=InitMode.MEANS)])
def test_a_set_grown_from_means_passes_the_near_copy_check(config) -> None:
    """The release the means grow into is judged by the near-copy check like any other, and passes it."""
    train = blobs(num_classes=2, per_class=30, size=28)
    synthetic = distill(train, 2, config, torch.device("cpu"), progress=False, site_id="site-0")
    assert synthetic.images.shape == (6, 1, 28, 28)
    without_near_copies(synthetic, train, SitePolicy(), config.init)


def test_a_site_starts_from_means_only_when_its_policy_allows_it() -> None:
    """Off by default at a hospital; a simulated site, whose operator plays every role, takes the run's choice."""
    request = make_request().model_copy(update={"distill": DMConfig(ipc=2, iterations=1, init=InitMode.MEANS)})
    with pytest.raises(PolicyError, match="allow_mean_init"):
        SitePolicy().check(request)
    SitePolicy(allow_mean_init=True).check(request)
    SitePolicy.permissive(allow_real_init=False).check(request)
