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


def pooled_arrays(sets: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and labels (N,) of ``(site id, images, labels)`` sets, in site-id order, so the pool
    (and every model trained on it) does not depend on the order the sets arrived in."""
    ordered = sorted(sets, key=lambda s: s[0])
    if not ordered:
        raise ValueError("cannot pool an empty list of sets")
    return (torch.from_numpy(np.concatenate([images for _, images, _ in ordered])),
            torch.from_numpy(np.concatenate([labels for _, _, labels in ordered])))


def train_on_pool(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
    check: Callable[[], None] | None = None,
) -> ConvNet:
    """A fresh ConvNet, initialised from ``settings.seed``, trained on the pool; returned on the CPU in eval mode."""
    torch.manual_seed(settings.seed)  # the initial weights too: a site's copy starts where the coordinator's did
    model = build_model(spec)
    train_classifier(model, images, labels, settings, device, class_weights, check)
    return model.cpu().eval()


def adjust_logits(model: ConvNet, shift: np.ndarray) -> ConvNet:
    """Add ``shift`` (K,) to the classifier's bias in place; returns the model."""
    with torch.no_grad():
        model.classifier.bias.add_(torch.as_tensor(shift, dtype=model.classifier.bias.dtype))
    return model
