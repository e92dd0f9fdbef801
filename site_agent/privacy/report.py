"""The privacy report of one release, measured at the site before anything is sealed.

1. **Memorisation** (``memorisation``): each synthetic image's nearest real training image in pixel
   space, in the feature space of a network trained on the site's images, and by SSIM, ranked against
   real-to-real nearest distances.
2. **Membership inference** (``membership``): a model is trained on the synthetic set the way the
   coordinator trains the global model; attacks try to tell the site's training images (members)
   from its held-out images (non-members). The threshold attack always; LiRA with shadow models
   distilled from random halves of all the site's images, as many as the policy's count and time
   allow. The same attacks on a model trained on a random real subset of the same size (members:
   that subset) are the reference point.
3. **Utility at the site**: that model's accuracy, balanced accuracy and AUC on the held-out images.

The numbers (:class:`PrivacySummary`) are signed into the manifest; the per-image findings stay here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from shared.datasets import reference_subset
from shared.errors import DataError
from shared.models import ConvNet, build_model
from shared.schemas import AttackSummary, Estimate, ModelSpec, NetworkSpec, PrivacySummary
from shared.training import TrainSettings, model_counts, predict_logits, train_classifier
from site_agent.data import LabelledImages, SiteImages
from site_agent.distill import SyntheticSet, distill
from site_agent.policy import PrivacyLimits
from site_agent.privacy.membership import AttackResult, Interval, confidence_scores, evaluate_attack, lira_scores
from site_agent.privacy.memorisation import Memorisation, memorisation

log = logging.getLogger(__name__)

_FEATURE_EPOCHS = 50  # the feature network only has to see the site's data well enough to embed it
_MIN_SHADOWS = 2  # LiRA's IN and OUT Gaussians need both sides for most images


@dataclass(frozen=True)
class PrivacyReport:
    """Everything the site measured about one synthetic set; only ``summary`` leaves the site."""

    summary: PrivacySummary
    memorisation: Memorisation
    notes: list[str]


@dataclass(frozen=True)
class ShadowSettings:
    """How the report re-distills for LiRA's shadow models: like the release, within the site's limits."""

    min_real_per_class: int = 1
    max_seconds: float | None = None  # the site's wall-time limit of one distillation


def measure_privacy(
    synthetic: SyntheticSet,
    images: SiteImages,
    limits: PrivacyLimits,
    device: torch.device,
    shadows: ShadowSettings = ShadowSettings(),
    seed: int = 0,
) -> PrivacyReport:
    """Memorisation, membership inference and utility of ``synthetic``, distilled from ``images.train``."""
    started = time.perf_counter()
    train, test, info = images.train, images.test, images.info
    # The network the set was distilled for, which is the global model's in a simulation.
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=train.images.shape[-1],
                     network=getattr(synthetic.config, "network", NetworkSpec()))
    settings = TrainSettings(epochs=limits.train_epochs, seed=seed)
    real_x, real_y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    notes: list[str] = []

    feature_net = _trained(spec, real_x, real_y, TrainSettings(epochs=min(_FEATURE_EPOCHS, limits.train_epochs), seed=seed), device)
    found = memorisation(synthetic.images, synthetic.labels, real_x, real_y, feature_net.cpu().embed,
                         limits.min_nearest_real_quantile or 0.0)

    target = _trained(spec, synthetic.images, synthetic.labels, settings, device)
    counts_per_class = np.bincount(synthetic.labels.numpy(), minlength=info.num_classes).tolist()
    subset = reference_subset(train.labels, counts_per_class, seed)
    reference = _trained(spec, real_x[subset], real_y[subset], settings, device)
    utility = _utility(target, test, device)

    attacks: dict[str, AttackResult | None] = dict.fromkeys(("threshold", "lira", "reference", "reference_lira"))
    shadow_count = 0
    if len(test) == 0:
        notes.append("no held-out images at the site: membership inference cannot be measured")
    else:
        everything = LabelledImages(np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels]))
        is_train = np.r_[np.ones(len(train), bool), np.zeros(len(test), bool)]
        in_subset = np.zeros(len(everything), bool)
        in_subset[subset] = True
        target_phi = _phi(target, everything, device)
        reference_phi = _phi(reference, everything, device)
        attacks["threshold"] = evaluate_attack("threshold", target_phi[is_train], target_phi[~is_train], seed)
        attacks["reference"] = evaluate_attack("threshold", reference_phi[in_subset], reference_phi[~is_train], seed)
        budget = None if limits.max_seconds is None else started + limits.max_seconds
        shadow = _shadow_models(synthetic, everything, counts_per_class, spec, settings, device, shadows,
                                limits.shadow_models, budget, seed)
        shadow_count = len(shadow.in_synthetic)
        if shadow_count >= _MIN_SHADOWS:
            lira = lira_scores(target_phi, np.stack(shadow.synthetic_phi), np.stack(shadow.in_synthetic))
            attacks["lira"] = evaluate_attack("lira", lira[is_train], lira[~is_train], seed)
            lira_ref = lira_scores(reference_phi, np.stack(shadow.subset_phi), np.stack(shadow.in_subset))
            attacks["reference_lira"] = evaluate_attack("lira", lira_ref[in_subset], lira_ref[~is_train], seed)
        elif limits.shadow_models:
            notes.append(f"LiRA not run: {shadow_count} of {limits.shadow_models} shadow models fitted the time limit")

    summary = PrivacySummary(
        threshold_attack=_summary(attacks["threshold"]), lira=_summary(attacks["lira"]),
        reference_threshold_attack=_summary(attacks["reference"]), reference_lira=_summary(attacks["reference_lira"]),
        members=len(train), non_members=len(test), shadow_models=shadow_count,
        nearest_real_flagged=found.flagged, nearest_real_min_rank=found.min_rank, max_ssim=found.max_ssim,
        synthetic_duplicates=found.duplicates, site_test_images=len(test), seconds=time.perf_counter() - started,
        **utility,
    )
    log.info("privacy report: threshold-attack AUC %s, LiRA AUC %s, %d images flagged, %.0f s",
             _auc_text(attacks["threshold"]), _auc_text(attacks["lira"]), found.flagged, summary.seconds)
    return PrivacyReport(summary, found, notes)


@dataclass
class _Shadows:
    synthetic_phi: list[np.ndarray]
    in_synthetic: list[np.ndarray]
    subset_phi: list[np.ndarray]
    in_subset: list[np.ndarray]


def _shadow_models(
    synthetic: SyntheticSet,
    everything: LabelledImages,
    counts_per_class: list[int],
    spec: ModelSpec,
    settings: TrainSettings,
    device: torch.device,
    shadows: ShadowSettings,
    wanted: int,
    budget: float | None,
    seed: int,
) -> _Shadows:
    """Shadow models on random halves of all the site's images: one distilled like the release, one
    trained on a real subset of the reference's size. Stops before a shadow that would overrun ``budget``."""
    rng = np.random.default_rng(seed + 1)
    found = _Shadows([], [], [], [])
    last_took = 0.0
    for k in range(wanted):
        if budget is not None and time.perf_counter() + last_took > budget:
            break
        began = time.perf_counter()
        half = np.zeros(len(everything), bool)
        half[rng.permutation(len(everything))[: len(everything) // 2]] = True
        try:
            shadow_set = distill(everything.subset(half), spec.num_classes, synthetic.config, device, progress=False,
                                 min_real_per_class=shadows.min_real_per_class, max_seconds=shadows.max_seconds)
        except DataError as exc:  # a half too small to distill: LiRA has what it has
            log.warning("privacy report: shadow model %d not trained (%s)", k + 1, exc)
            break
        model = _trained(spec, shadow_set.images, shadow_set.labels, settings, device)
        found.synthetic_phi.append(_phi(model, everything, device))
        found.in_synthetic.append(half)
        picked = np.flatnonzero(half)[reference_subset(everything.labels[half], counts_per_class, seed + k)]
        in_subset = np.zeros(len(everything), bool)
        in_subset[picked] = True
        real = everything.subset(picked)
        model = _trained(spec, torch.from_numpy(real.images), torch.from_numpy(real.labels), settings, device)
        found.subset_phi.append(_phi(model, everything, device))
        found.in_subset.append(in_subset)
        last_took = time.perf_counter() - began
        log.info("privacy report: shadow model %d of %d took %.0f s", k + 1, wanted, last_took)
    return found


def _trained(spec: ModelSpec, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
             device: torch.device) -> ConvNet:
    model = build_model(spec)
    train_classifier(model, images.float(), labels, settings, device)
    return model.cpu().eval()


def _phi(model: ConvNet, images: LabelledImages, device: torch.device) -> np.ndarray:
    logits = predict_logits(model, torch.from_numpy(images.images), device)
    return confidence_scores(logits, torch.from_numpy(images.labels))


def _utility(model: ConvNet, test: LabelledImages, device: torch.device) -> dict[str, float | None]:
    """Held-out figures of the model trained on the set; AUC only where every class has held-out images."""
    if len(test) == 0:
        return {"site_accuracy": None, "site_balanced_accuracy": None, "site_auc": None}
    counts = model_counts(model, test.images, test.labels, model.classifier.out_features, device)
    every_class = bool((counts.class_counts > 0).all())
    return {"site_accuracy": counts.accuracy(), "site_balanced_accuracy": counts.balanced_accuracy(),
            "site_auc": counts.auc() if every_class and not math.isnan(counts.auc()) else None}


def _summary(result: AttackResult | None) -> AttackSummary | None:
    if result is None:
        return None

    def estimate(interval: Interval) -> Estimate:
        return Estimate(value=interval.value, low=interval.low, high=interval.high)

    return AttackSummary(auc=estimate(result.auc), tpr_at_1pct_fpr=estimate(result.tpr_at_1pct_fpr),
                         tpr_at_0_1pct_fpr=estimate(result.tpr_at_0_1pct_fpr))


def _auc_text(result: AttackResult | None) -> str:
    return "n/a" if result is None else f"{result.auc.value:.3f}"
