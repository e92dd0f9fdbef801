"""Class-imbalance correction: a model trained on a balanced pool is moved towards the real class mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordinator.imbalance import (
    TUNING_SCALES,
    choose_scale,
    class_weights,
    logit_shift,
    pooled_prior,
    real_class_prior,
)
from coordinator.pool import PooledSet
from coordinator.train import train_corrected
from shared.methods import NetworkSpec
from shared.metrics import EvalCounts, hits_by_scale, log_odds
from shared.schemas import ImbalanceCorrection, ModelSpec
from shared.training import TrainSettings, predict_logits
from site_agent.policy import SitePolicy

CPU = torch.device("cpu")
SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=8, network=NetworkSpec(depth=1, width=8))


def _overlapping(per_class: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes whose images differ by a faint pattern under heavy noise: the prior matters."""
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.linspace(-0.3, 0.3, 64).reshape(1, 1, 8, 8)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = (2 * labels.float() - 1).reshape(-1, 1, 1, 1) * pattern + torch.randn(len(labels), 1, 8, 8, generator=gen)
    return images, labels


@pytest.mark.parametrize("correction", [ImbalanceCorrection.LOGIT_ADJUST, ImbalanceCorrection.REWEIGHT])
def test_correction_predicts_the_majority_class_more_often_and_gains_accuracy(correction) -> None:
    """On a 9:1 test mix, the corrected model predicts class 0 more often and is more accurate than uncorrected."""
    images, labels = _overlapping([40, 40], seed=0)  # the balanced pool
    pooled = PooledSet(images, labels, {"site-0": 80})
    prior = np.array([0.9, 0.1])
    models = train_corrected(pooled, SPEC, TrainSettings(epochs=30, batch_size=32, augment=False), CPU, correction, prior)
    assert models.correction == correction and models.model is not models.uncorrected
    test_x, test_y = _overlapping([900, 100], seed=1)

    def counts(model) -> EvalCounts:
        return EvalCounts.from_scores(test_y.numpy(), log_odds(predict_logits(model, test_x, CPU).numpy()))

    before, after = counts(models.uncorrected), counts(models.model)
    assert after.confusion[:, 0].sum() > before.confusion[:, 0].sum()  # more predictions of class 0
    assert after.accuracy() > before.accuracy()
    assert after.accuracy() >= after.majority_rate() - 0.02


def test_no_correction_without_released_counts() -> None:
    """When every site withheld its counts, the model is left uncorrected and the summary says so."""
    images, labels = _overlapping([10, 10], seed=0)
    models = train_corrected(PooledSet(images, labels, {"s": 20}), SPEC, TrainSettings(epochs=1, augment=False), CPU,
                             ImbalanceCorrection.LOGIT_ADJUST, None)
    assert models.correction == ImbalanceCorrection.NONE and models.model is models.uncorrected


def test_shift_and_weights_follow_the_priors() -> None:
    """The logit shift is log(real/pooled); weights are real/pooled with mean 1 over pooled images; absent classes get 0."""
    real, pooled = np.array([0.6, 0.3, 0.1]), pooled_prior(torch.tensor([0, 0, 1, 1]), 3)
    np.testing.assert_allclose(logit_shift(real, pooled), [np.log(0.6 / 0.5), np.log(0.3 / 0.5), 0.0])
    weights = class_weights(real, pooled).numpy()
    assert weights[2] == 0 and weights[0] / weights[1] == pytest.approx(2.0)
    assert float((weights * pooled).sum()) == pytest.approx(1.0)


class _Manifest:
    def __init__(self, counts):
        self.real_class_counts = counts


class _Bundle:
    def __init__(self, counts):
        self.manifest = _Manifest(counts)


def test_prior_sums_released_counts_and_skips_withheld_ones() -> None:
    """The prior is the smoothed sum over sites that released counts; all withheld gives None."""
    prior = real_class_prior([_Bundle({0: 99, 1: 9}), _Bundle(None), _Bundle({0: 0, 1: 0})], 2)
    np.testing.assert_allclose(prior, [100 / 110, 10 / 110])
    assert real_class_prior([_Bundle(None)], 2) is None


@pytest.mark.parametrize(
    ("policy", "released"),
    [
        (SitePolicy(), {0: 123, 1: 7}),
        (SitePolicy(class_count_rounding=10), {0: 120, 1: 10}),
        (SitePolicy(release_class_counts=False), None),
    ],
)
def test_policy_releases_rounds_or_withholds_class_counts(policy: SitePolicy, released) -> None:
    """The site's policy decides whether its class counts leave the site, and how coarsely."""
    assert policy.released_class_counts([123, 7]) == released


def test_released_counts_travel_signed_and_must_cover_every_class(keys) -> None:
    """Counts sealed by the site reach the coordinator in the verified manifest; counts for some classes only are refused."""
    from coordinator.receive import Expectation, receive_bundle
    from shared.datasets import dataset_info
    from shared.errors import InvalidBundle
    from site_agent.release import seal_release
    from tests.conftest import make_request, make_synthetic

    coordinator, sites = keys
    request = make_request()
    expected = Expectation(request, (1, 28, 28), 2, 1 << 20)
    info = dataset_info("breastmnist")
    sealed = seal_release(make_synthetic(request), request, sites["site-0"], info, 130, {0: 120, 1: 10}, 10)
    manifest = receive_bundle(sealed, expected, coordinator, set()).manifest
    assert manifest.real_class_counts == {0: 120, 1: 10} and manifest.real_class_counts_rounding == 10
    partial = seal_release(make_synthetic(request), request, sites["site-0"], info, 130, {0: 130})
    with pytest.raises(InvalidBundle, match="real_class_counts"):
        receive_bundle(partial, expected, coordinator, set())


def test_tuned_adjustment_restores_accuracy_where_the_plain_shift_is_too_small() -> None:
    """A net fitted to a small, well-separated balanced pool grows logits far beyond log(prior ratio): the plain
    shift barely moves its predictions on a 9:1 mix, while the scale tuned on training-like images of that mix
    reaches the majority rate on fresh test images."""
    images, labels = _overlapping([40, 40], seed=0)
    prior = np.array([0.9, 0.1])
    models = train_corrected(PooledSet(images, labels, {"s": 80}), SPEC,
                             TrainSettings(epochs=100, batch_size=32, augment=False), CPU,
                             ImbalanceCorrection.TUNED_LOGIT_ADJUST, prior)
    assert models.needs_tuning and models.scale == 1.0
    site_x, site_y = _overlapping([450, 50], seed=2)  # the sites' training images, not the test images
    tuned = models.tuned_on(site_x.numpy(), site_y.numpy(), CPU)
    assert tuned.scale > 1.0 and tuned.uncorrected is models.uncorrected
    test_x, test_y = _overlapping([900, 100], seed=1)

    def accuracy(model) -> float:
        return EvalCounts.from_scores(test_y.numpy(), log_odds(predict_logits(model, test_x, CPU).numpy())).accuracy()

    assert accuracy(tuned.model) >= 0.9 - 0.02
    assert accuracy(tuned.model) > accuracy(models.model)


def test_choose_scale_takes_the_most_accurate_and_breaks_ties_towards_one() -> None:
    """The summed hits decide; among equally accurate scales the one nearest the plain adjustment wins."""
    scales = (0.0, 0.5, 1.0, 2.0, 4.0)
    hits = np.array([5, 7, 6, 7, 3])
    assert choose_scale(hits, scales) == 0.5
    hits[3] = 9
    assert choose_scale(hits, scales) == 2.0
    assert choose_scale(np.zeros(5, np.int64), scales) == 1.0
    assert choose_scale([7 * 10**18, 7 * 10**18 + 1, 0, 0, 0], scales) == 0.5  # sums past int64 still compare


def test_sites_counts_add_up_to_the_counts_of_their_union() -> None:
    """What each site sends for tuning sums to the counts one process holding every image would compute, and those
    are the right predictions at each scale; one image moves at most two increments of them."""
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(90, 3)), rng.integers(0, 3, 90)
    shift, scales = np.array([2.5, -1.2, -1.3]), np.array(TUNING_SCALES)
    parts = [hits_by_scale(logits[i::3], labels[i::3], shift) for i in range(3)]
    whole = hits_by_scale(logits, labels, shift)
    np.testing.assert_array_equal(sum(parts), whole)
    right = [int(((logits + scale * shift).argmax(axis=1) == labels).sum()) for scale in scales]
    assert whole.tolist() == right
    for i in range(90):
        steps = np.diff(hits_by_scale(logits[i:i + 1], labels[i:i + 1], shift), prepend=0)
        assert np.abs(steps).sum() <= 2
