"""Generated class data shared by the distillation-method tests: smooth per-class templates plus noise."""

from __future__ import annotations

import torch

from shared.methods import NetworkSpec
from shared.models import ConvNet
from shared.training import TrainSettings, predict_scores, train_classifier

CPU = torch.device("cpu")
SIZE = 16
NET = NetworkSpec(depth=2, width=16)


def class_templates(k: int = 3) -> torch.Tensor:
    """One smooth random pattern per class (k, 1, SIZE, SIZE), fixed across calls."""
    gen = torch.Generator().manual_seed(1234)
    return torch.nn.functional.avg_pool2d(torch.randn(k, 1, SIZE, SIZE, generator=gen), 3, 1, 1) * 2


def data(n: int, seed: int, order: tuple[int, ...] = (0, 1, 2)) -> dict[int, torch.Tensor]:
    """n noisy copies of each class template, in [-1, 1], keyed in ``order``."""
    gen = torch.Generator().manual_seed(seed)
    templates = class_templates()
    return {c: (templates[c] + 0.3 * torch.randn(n, 1, SIZE, SIZE, generator=gen)).clamp(-1, 1) for c in order}


def accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on held-out generated data of a ConvNet trained on (images, labels)."""
    model = train_classifier(
        ConvNet(1, 3, SIZE, NET), images, labels, TrainSettings(epochs=30, batch_size=64, augment=False), CPU
    )
    test = data(50, seed=99)
    x = torch.cat(list(test.values()))
    y = torch.cat([torch.full((len(v),), c) for c, v in test.items()])
    return float((predict_scores(model, x, CPU).argmax(1) == y.numpy()).mean())
