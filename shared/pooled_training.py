"""The global model from the pooled synthetic sets: the same code, order and seed at the coordinator, which
trains it to report and deliver it, and at every site that scores it (``site_agent.scored_model``), which
trains its own copy from the same signed sets rather than run weights it is sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, train_classifier

SiteSet = tuple[str, np.ndarray, np.ndarray, np.ndarray | None]  # site id, images, labels, soft labels (or None)


def pooled_arrays(sets: Iterable[SiteSet], num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images (N, C, H, W), labels (N,) and training targets of ``(site id, images, labels, soft labels)`` sets, in
    site-id order, so the pool (and every model trained on it) does not depend on the order the sets arrived in.

    The targets (N, K) are each set's soft labels, or its classes one-hot for a set released without them; None
    when no set has soft labels, so such a pool trains exactly as on its classes.
    """
    ordered = sorted(sets, key=lambda s: s[0])
    if not ordered:
        raise ValueError("cannot pool an empty list of sets")
    images = torch.from_numpy(np.concatenate([images for _, images, _, _ in ordered]))
    labels = torch.from_numpy(np.concatenate([labels for _, _, labels, _ in ordered]))
    if all(soft is None for *_, soft in ordered):
        return images, labels, None
    targets = [np.eye(num_classes, dtype=np.float32)[labels] if soft is None else soft for _, _, labels, soft in ordered]
    return images, labels, torch.from_numpy(np.concatenate(targets))


def train_on_pool(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
    check: Callable[[], None] | None = None,
    targets: torch.Tensor | None = None,
) -> ConvNet:
    """A fresh ConvNet, initialised from ``settings.seed``, trained on the pool; returned on the CPU in eval mode.

    ``targets`` (N, K) are soft labels to fit instead of ``labels`` (:func:`pooled_arrays`). ``class_weights`` (K,)
    weight each class's loss; without them, ``settings.balance_classes`` weights each class by the inverse of its
    count of ``labels`` in the pool (:func:`balancing_weights`).
    """
    torch.manual_seed(settings.seed)  # the initial weights too: a site's copy starts where the coordinator's did
    model = build_model(spec)
    if class_weights is None and settings.balance_classes:
        class_weights = balancing_weights(labels, spec.num_classes)
    train_classifier(model, images, labels if targets is None else targets, settings, device, class_weights, check)
    return model.cpu().eval()


def balancing_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """Loss weights (K,) that make every class in the pool count alike: ``1 / count``, scaled to a mean of 1 over
    the pooled images (0 for a class not in the pool). None when the pool is already balanced, so a balanced
    pool trains exactly as without weights.

    Sites skip a class they hold too few images of (``min_real_per_class``), so a rare class can come with fewer
    synthetic images than the others; unweighted, the global model would learn that as a prior against it.
    """
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    present = counts > 0
    if bool((counts[present] == counts[present][0]).all()):
        return None
    weights = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    weights /= (weights * counts).sum() / counts.sum()
    return weights.to(torch.float32)


def training_prior(labels: torch.Tensor, num_classes: int, balance_classes: bool) -> np.ndarray:
    """The class prior (K,) a model trained on the pool learns: the pool's class frequencies, or, when the
    training balances the classes, uniform over the classes in the pool (0 for a class not in it)."""
    counts = np.bincount(labels.numpy(), minlength=num_classes).astype(np.float64)
    if balance_classes:
        counts = (counts > 0).astype(np.float64)
    return counts / counts.sum()


def adjust_logits(model: ConvNet, shift: np.ndarray) -> ConvNet:
    """Add ``shift`` (K,) to the classifier's bias in place; returns the model."""
    with torch.no_grad():
        model.classifier.bias.add_(torch.as_tensor(shift, dtype=model.classifier.bias.dtype))
    return model
