"""Training the global model on the pooled synthetic set, corrected for the real class mix when asked."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from coordinator.imbalance import adjust_logits, class_weights, logit_shift, pooled_prior
from coordinator.pool import PooledSet
from shared.models import ConvNet, build_model
from shared.schemas import ImbalanceCorrection, ModelSpec
from shared.training import TrainSettings, train_classifier

log = logging.getLogger(__name__)


def train_global(
    pooled: PooledSet,
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
) -> ConvNet:
    """A fresh ConvNet trained on the pooled synthetic images; returned on the CPU in eval mode."""
    model = build_model(spec)
    train_classifier(model, pooled.images, pooled.labels, settings, device, class_weights)
    return model.cpu().eval()


@dataclass(frozen=True)
class GlobalModels:
    """The global model, and the same training without correction so the report can show the trade-off."""

    model: ConvNet
    uncorrected: ConvNet
    correction: ImbalanceCorrection  # what was applied: NONE when asked for none or no site released counts


def train_corrected(
    pooled: PooledSet,
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    correction: ImbalanceCorrection,
    real_prior: np.ndarray | None,
) -> GlobalModels:
    """Train the global model and apply ``correction`` with the real class prior (K,) the sites released."""
    uncorrected = train_global(pooled, spec, settings, device)
    if correction == ImbalanceCorrection.NONE or real_prior is None:
        if correction != ImbalanceCorrection.NONE:
            log.warning("no site released class counts: the global model is not corrected for class imbalance")
        return GlobalModels(uncorrected, uncorrected, ImbalanceCorrection.NONE)
    pool_prior = pooled_prior(pooled.labels, spec.num_classes)
    if correction == ImbalanceCorrection.LOGIT_ADJUST:
        model = adjust_logits(copy.deepcopy(uncorrected), logit_shift(real_prior, pool_prior))
    else:
        model = train_global(pooled, spec, settings, device, class_weights(real_prior, pool_prior))
    return GlobalModels(model, uncorrected, correction)
