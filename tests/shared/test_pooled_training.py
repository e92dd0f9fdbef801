"""The global model's training on the pool, as both the coordinator and a scoring site run it."""

from __future__ import annotations

import numpy as np
import torch

from shared.methods import NetworkSpec
from shared.pooled_training import balancing_weights, train_on_pool, training_prior
from shared.schemas import ModelSpec
from shared.training import TrainSettings

SPEC = ModelSpec(in_channels=1, num_classes=3, image_size=8, network=NetworkSpec(depth=1, width=8))
CPU = torch.device("cpu")


def _pool(per_class: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = labels.float().reshape(-1, 1, 1, 1) + torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return images, labels


def test_a_class_with_fewer_synthetic_images_weighs_as_much_as_the_others() -> None:
    """Four sites gave 40 images of two classes but a rare class only 10: each of its images weighs 4 times as much,
    so every class carries the same total, and the mean weight over the pool stays 1."""
    _, labels = _pool([40, 40, 10])
    weights = balancing_weights(labels, 3)
    assert weights is not None and np.allclose(weights * torch.tensor([40, 40, 10]), weights[0] * 40)
    assert np.isclose(float((weights[labels]).mean()), 1.0)
    assert balancing_weights(torch.tensor([0, 0, 1, 1]), 3) is None  # balanced (a class absent): no weights
    assert np.allclose(training_prior(labels, 3, balance_classes=True), [1 / 3] * 3)
    assert np.allclose(training_prior(labels, 3, balance_classes=False), [40 / 90, 40 / 90, 10 / 90])


def test_a_balanced_pool_trains_exactly_as_without_balancing() -> None:
    images, labels = _pool([6, 6, 6])
    settings = TrainSettings(epochs=3, augment=False)
    plain = train_on_pool(images, labels, SPEC, settings, CPU)
    balanced = train_on_pool(images, labels, SPEC, TrainSettings(epochs=3, augment=False, balance_classes=True), CPU)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), balanced.state_dict().values(), strict=True))
    skewed_images, skewed_labels = _pool([12, 12, 3])
    plain = train_on_pool(skewed_images, skewed_labels, SPEC, settings, CPU)
    balanced = train_on_pool(skewed_images, skewed_labels, SPEC, TrainSettings(epochs=3, augment=False,
                                                                                balance_classes=True), CPU)
    assert not torch.equal(plain.classifier.bias, balanced.classifier.bias)
