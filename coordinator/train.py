"""Training the global model on the pooled synthetic set, corrected for the real class mix when asked."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from coordinator.imbalance import TUNING_SCALES, choose_scale, class_weights, logit_shift, pooled_prior
from coordinator.pool import PooledSet
from shared.metrics import hits_by_scale
from shared.models import ConvNet
from shared.pooled_training import adjust_logits, train_on_pool, training_prior
from shared.schemas import ImbalanceCorrection, ModelSpec
from shared.training import TrainSettings, predict_logits

log = logging.getLogger(__name__)


def train_global(
    pooled: PooledSet,
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
) -> ConvNet:
    """A fresh ConvNet trained on the pooled synthetic images; returned on the CPU in eval mode."""
    return train_on_pool(pooled.images, pooled.labels, spec, settings, device, class_weights, targets=pooled.targets)


@dataclass(frozen=True)
class GlobalModels:
    """The global model, and the same training without correction so the report can show the trade-off."""

    model: ConvNet
    uncorrected: ConvNet
    correction: ImbalanceCorrection  # what was applied: NONE when asked for none or no site released counts
    shift: np.ndarray | None = None  # the logit shift (K,) of a logit adjustment, before its scale
    scale: float = 1.0  # the shift's scale; tuned-logit-adjust chooses it with the sites' counts
    class_weights: torch.Tensor | None = None  # the loss weights (K,) the reweighted model was trained with

    @property
    def needs_tuning(self) -> bool:
        return self.correction == ImbalanceCorrection.TUNED_LOGIT_ADJUST and self.shift is not None

    def tuned(self, hits: np.ndarray, scales: tuple[float, ...] = TUNING_SCALES) -> GlobalModels:
        """The models with the shift scaled by the scale of the most summed right predictions ``hits`` (S,)."""
        assert self.shift is not None, "only a logit adjustment is tuned"
        scale = choose_scale(hits, scales)
        return replace(self, model=adjust_logits(copy.deepcopy(self.uncorrected), scale * self.shift), scale=scale)

    def tuned_on(self, images: np.ndarray, labels: np.ndarray, device: torch.device) -> GlobalModels:
        """Tuned (where the correction is tuned at all) with the counts computed in one place: simulation only,
        where one process holds every site's training images (the random-subset yardstick, benchmarks). The
        sites' summed counts are the same numbers."""
        if not self.needs_tuning:
            return self
        logits = predict_logits(self.uncorrected, torch.from_numpy(images), device).numpy()
        return self.tuned(hits_by_scale(logits, labels, self.shift, TUNING_SCALES))


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
    if correction in (ImbalanceCorrection.LOGIT_ADJUST, ImbalanceCorrection.TUNED_LOGIT_ADJUST):
        # tuned-logit-adjust starts at scale 1; GlobalModels.tuned rescales it once the counts are in. The shift is
        # from the prior the model learned: the pool's, or uniform when its training balanced the classes.
        learned = training_prior(pooled.labels, spec.num_classes, settings.balance_classes)
        shift = logit_shift(real_prior, learned)
        return GlobalModels(adjust_logits(copy.deepcopy(uncorrected), shift), uncorrected, correction, shift)
    weights = class_weights(real_prior, pool_prior)
    return GlobalModels(train_global(pooled, spec, settings, device, weights), uncorrected, correction,
                        class_weights=weights)
