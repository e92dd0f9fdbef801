"""DC distillation on tiny generated data."""

from __future__ import annotations

import pytest
import torch

from shared.methods import DCConfig, InitMode, NetworkSpec
from shared.models import ConvNet
from shared.training import TrainSettings, predict_scores, train_classifier
from site_agent.distill import distill
from site_agent.distill.dc import paper_loops
from tests.conftest import blobs

CPU = torch.device("cpu")
SMALL = NetworkSpec(depth=2, width=16)


def _config(**changes) -> DCConfig:
    return DCConfig(**{"ipc": 2, "iterations": 12, "batch_real": 32, "outer_loop": 3, "inner_loop": 2,
                       "network": SMALL, "lr_img": 0.1, **changes})


def test_shapes_labels_and_finiteness() -> None:
    """ipc images per class, class-major, float32 on the CPU, finite."""
    result = distill(blobs(num_classes=3), 3, _config(iterations=2), CPU, progress=False)
    assert result.images.shape == (6, 1, 16, 16) and result.images.dtype == torch.float32
    assert result.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert result.images.isfinite().all()


def test_matching_loss_decreases() -> None:
    """The gradient-matching loss falls over iterations."""
    history = distill(blobs(), 2, _config(iterations=20), CPU, progress=False).loss_history
    assert sum(history[-4:]) / 4 < sum(history[:4]) / 4


def test_synthetic_set_trains_a_classifier_above_chance() -> None:
    """A ConvNet trained only on 2 synthetic images per class classifies held-out data well."""
    result = distill(blobs(seed=0), 2, _config(iterations=30, dsa=False), CPU, progress=False)
    model = ConvNet(1, 2, 16, SMALL)
    train_classifier(model, result.images, result.labels, TrainSettings(epochs=60, augment=False), CPU)
    held_out = blobs(seed=0, per_class=50)  # same class patterns, fresh noise
    noise_free = blobs(seed=0, per_class=1)
    scores = predict_scores(model, torch.from_numpy(held_out.images), CPU)
    accuracy = (scores.argmax(1) == held_out.labels).mean()
    assert noise_free.labels.tolist() == [0, 1]
    assert accuracy > 0.8


def test_seed_reproduces_on_cpu() -> None:
    """Same seed, same synthetic images."""
    a = distill(blobs(), 2, _config(iterations=2, seed=3), CPU, progress=False).images
    b = distill(blobs(), 2, _config(iterations=2, seed=3), CPU, progress=False).images
    assert torch.equal(a, b)


def test_small_classes_are_not_distilled() -> None:
    """A class below min_real_per_class is left out instead of being nearly copied."""
    data = blobs(num_classes=3)
    keep = (data.labels != 2) | (torch.arange(len(data.labels)).numpy() % 40 < 3)  # class 2 keeps 3 images
    result = distill(data.subset(keep.nonzero()[0]), 3, _config(iterations=1), CPU, progress=False, min_real_per_class=5)
    assert result.classes == [0, 1] and set(result.labels.tolist()) == {0, 1}


@pytest.mark.parametrize(("ipc", "loops"), [(1, (1, 1)), (10, (10, 50)), (20, (20, 25)), (50, (50, 10)), (80, (50, 10))])
def test_paper_loops(ipc, loops) -> None:
    """Outer/inner loops follow the paper's table."""
    assert paper_loops(ipc) == loops


def test_real_init_starts_from_local_images() -> None:
    """init=real starts from actual local images (why a site must opt in)."""
    data = blobs()
    result = distill(data, 2, _config(iterations=1, init=InitMode.REAL, lr_img=1e-6), CPU, progress=False)
    real = torch.from_numpy(data.images)
    distances = torch.cdist(result.images.flatten(1), real.flatten(1)).min(dim=1).values
    assert distances.max() < 1e-2
