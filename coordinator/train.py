"""Training the global model on the pooled synthetic set."""

from __future__ import annotations

import torch

from coordinator.pool import PooledSet
from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, train_classifier


def train_global(pooled: PooledSet, spec: ModelSpec, settings: TrainSettings, device: torch.device) -> ConvNet:
    """A fresh ConvNet trained on the pooled synthetic images; returned on the CPU in eval mode."""
    model = build_model(spec)
    train_classifier(model, pooled.images, pooled.labels, settings, device)
    return model.cpu().eval()
