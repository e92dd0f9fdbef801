"""Training and scoring a classifier on a small image set: used for the global model and benchmarks.

The protocol follows the dataset-distillation literature: a fresh ConvNet, SGD with momentum 0.9 and
weight decay 5e-4, the learning rate divided by 10 at half the epochs, cross-entropy, and optional
per-image DSA augmentation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.augment import dsa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of :func:`train_classifier`."""

    epochs: int = 300
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    seed: int = 0


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
) -> nn.Module:
    """Train ``model`` in place on images (N, C, H, W) float and labels (N,) int64; returns it."""
    torch.manual_seed(settings.seed)
    model.to(device).train()
    x, y = images.to(device), labels.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[settings.epochs // 2], gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(settings.seed)
    aug_seeds = np.random.default_rng(settings.seed)
    for _ in range(settings.epochs):
        order = torch.randperm(len(x), generator=order_gen).to(device)
        for start in range(0, len(x), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            batch = x[idx]
            if settings.augment:
                batch = dsa(batch, int(aug_seeds.integers(2**31)), per_sample=True)
            loss = loss_fn(model(batch), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


@torch.no_grad()
def predict_scores(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Softmax class scores (N, num_classes) for images (N, C, H, W)."""
    model.to(device).eval()
    chunks = [
        torch.softmax(model(images[i : i + batch_size].to(device)), dim=1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy()
