"""Training and scoring a classifier on a small image set: used for the global model and benchmarks.

The protocol follows the dataset-distillation literature: a fresh ConvNet, SGD with momentum 0.9 and
weight decay 5e-4, the learning rate divided by 10 at half the epochs, cross-entropy, and optional
per-image DSA augmentation.

Every minibatch step here and in distillation goes through :func:`sgd_epoch` /
:func:`mean_loss_gradients`, which run the batch in cache-sized chunks on a CPU (the same gradients
as one big batch, faster) and in one pass on a GPU. ``check``, where given, is called after every
minibatch step: a site passes its time limit's check there, which raises once time is up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.augment import dsa
from shared.metrics import EvalCounts, log_odds

log = logging.getLogger(__name__)

# A chunk whose widest activation holds about this many floats (16 MiB) stays in a server CPU's
# last-level cache. On the reference CPU, a ConvNet-128 gradient over 256 RGB 32x32 images took
# 1.3 s in one batch and 0.7-0.8 s in chunks of 32 (docs/benchmarks.md).
_CPU_CHUNK_FLOATS = 4 * 2**20
_MIN_CHUNK = 8  # below this, per-call overhead costs more than the cache saves
_DEFAULT_WIDTH = 128  # for models that do not say how wide they are


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
    balance_classes: bool = False  # the global model's: weights from the pool's class counts (shared.pooled_training)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
    check: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on images (N, C, H, W) float and labels (N,) int64, or soft labels (N, K) float
    (class probabilities, fitted by cross-entropy); returns it.

    ``class_weights`` (num_classes,) weight each image's loss by its class (imbalance correction).
    ``check`` is called after every minibatch step (and may raise to stop the training).
    """
    torch.manual_seed(settings.seed)
    model.to(device).train()
    x, y = images.to(device), labels.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[settings.epochs // 2], gamma=0.1)
    order_gen = torch.Generator().manual_seed(settings.seed)
    aug_seeds = np.random.default_rng(settings.seed)
    weights = None if class_weights is None else class_weights.to(device)
    for _ in range(settings.epochs):
        sgd_epoch(model, optimizer, x, y, settings.batch_size, settings.augment, order_gen, aug_seeds, weights, check)
        scheduler.step()
    return model.eval()


def chunk_size(images: torch.Tensor, width: int) -> int:
    """Images per forward pass: the whole batch on an accelerator, a cache-sized chunk on a CPU.

    ``width`` is the network's channel count, so ``width * H * W`` floats is one image's widest
    activation (the first conv block's output).
    """
    if images.device.type != "cpu":
        return max(1, len(images))
    return max(_MIN_CHUNK, _CPU_CHUNK_FLOATS // (width * images.shape[-2] * images.shape[-1]))


def mean_loss_gradients(
    model: nn.Module,
    params: list[torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
    class_weights: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Gradients of the mean (optionally class-weighted) cross-entropy over ``images``, summed chunk by
    chunk, and that mean loss.

    The same sum as one big batch (up to float rounding) because every image's loss depends on that
    image alone (instance norm), with a working set that fits in cache.
    """
    total: list[torch.Tensor] | None = None
    loss_sum = 0.0
    for start in range(0, len(images), chunk):
        logits = model(images[start : start + chunk])
        loss = F.cross_entropy(logits, labels[start : start + chunk], weight=class_weights, reduction="sum") / len(images)
        grads = torch.autograd.grad(loss, params)
        total = list(grads) if total is None else [t.add_(g) for t, g in zip(total, grads, strict=True)]
        loss_sum += loss.item()
    assert total is not None, "mean_loss_gradients needs at least one image"
    return total, loss_sum


def sgd_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    augment: bool,
    order_gen: torch.Generator,
    aug_rng: np.random.Generator,
    class_weights: torch.Tensor | None = None,
    check: Callable[[], None] | None = None,
) -> float:
    """One pass over (images, labels) in shuffled minibatches, each with its own per-image DSA; the mean loss.

    ``check`` is called after every minibatch step (and may raise to stop the pass).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    chunk = chunk_size(images, getattr(model, "width", _DEFAULT_WIDTH))
    order = torch.randperm(len(images), generator=order_gen).to(images.device)
    losses = []
    for start in range(0, len(images), batch_size):
        idx = order[start : start + batch_size]
        batch = images[idx]
        if augment:
            batch = dsa(batch, int(aug_rng.integers(2**31)), per_sample=True)
        grads, loss = mean_loss_gradients(model, params, batch, labels[idx], chunk, class_weights)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        losses.append(loss)
        if check is not None:
            check()
    return float(np.mean(losses))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, num_classes) on the CPU for images (N, C, H, W)."""
    model.to(device).eval()
    chunks = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def model_counts(model: nn.Module, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 device: torch.device) -> EvalCounts:
    """Summable evaluation counts (``shared.metrics``) of a model on normalised images (N, C, H, W) and labels (N,).

    No image gives all-zero counts, which still add up with other sites' counts.
    """
    if len(labels) == 0:
        return EvalCounts.empty(num_classes)
    logits = predict_logits(model, torch.from_numpy(images), device).numpy()
    return EvalCounts.from_scores(labels, log_odds(logits))


def predict_scores(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Softmax class scores (N, num_classes) for images (N, C, H, W)."""
    return torch.softmax(predict_logits(model, images, device, batch_size), dim=1).numpy()
