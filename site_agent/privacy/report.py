"""The privacy report of one release, measured at the site before anything is sealed.

1. **Memorisation** (``memorisation``): each synthetic image's nearest real training image in pixel
   space, in the feature space of a network trained on the site's images, and by SSIM, ranked against
   real-to-real nearest distances.
2. **Membership inference** (``membership``): a model is trained on the synthetic set the way the
   coordinator trains the global model (on its soft labels, when the set carries them); attacks try to
   tell the site's training images (members) from its held-out images (non-members). The threshold
   attack always; LiRA with shadow models distilled (and labelled) from random halves of all the site's
   images, as many as the policy's count and time allow. The same attacks on a model trained on a random
   real subset of the same size (members: that subset) are the reference point.
3. **Utility at the site**: that model's accuracy, balanced accuracy and AUC on the held-out images.

The numbers (:class:`PrivacySummary`) are signed into the manifest; the per-image findings stay here.

Randomness: every model trained, the reference subset, the shadow models' halves and their distillation,
and the bootstrap draw from ``seed`` alone. The site passes one derived from its own secret and the set
(``site_agent.privacy.seed``), never the request's: the coordinator can neither replay the report nor
re-roll it. The shadow sets are distilled with the release's settings but that seed.

Time: every model the report trains checks the request's hard time limit (``time_limit``) after each
minibatch, and the report raises :class:`shared.errors.TimeLimitReached` when it passes. Shadow models are
optional: one is started only when it is expected to end before both the report's own ``max_seconds``
and the request's limit (less a reserve for what follows), and one that still runs past that point is
dropped, so shadow models never make a release fail.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from shared.datasets import reference_subset
from shared.errors import DataError, TimeLimitReached
from shared.manifest import AttackSummary, Estimate, PrivacySummary
from shared.methods import NetworkSpec
from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, model_counts, predict_logits, train_classifier
from site_agent.distill import SyntheticSet, distill
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.labelled import LabelledImages, SiteImages
from site_agent.policy import PrivacyLimits
from site_agent.privacy.membership import AttackResult, Interval, confidence_scores, evaluate_attack, lira_scores
from site_agent.privacy.memorisation import Memorisation, memorisation

log = logging.getLogger(__name__)

_FEATURE_EPOCHS = 50  # the feature network only has to see the site's data well enough to embed it
_MIN_SHADOWS = 2  # LiRA's IN and OUT Gaussians need both sides for most images
# Shadow models stop this long before the request's time limit (a share of it, at most a minute): the
# attacks' bootstrap, the report files and the seal still have to run.
_RESERVE_SHARE, _MAX_RESERVE_SECONDS = 0.05, 60.0


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


def measure_privacy(
    synthetic: SyntheticSet,
    images: SiteImages,
    limits: PrivacyLimits,
    device: torch.device,
    shadows: ShadowSettings = ShadowSettings(),
    seed: int = 0,
    time_limit: Deadline = NO_LIMIT,
) -> PrivacyReport:
    """Memorisation, membership inference and utility of ``synthetic``, distilled from ``images.train``.

    Raises:
        TimeLimitReached: the request's ``time_limit`` passed (shadow models are dropped before it does).
    """
    started, report_began = time.perf_counter(), time.monotonic()
    check = time_limit.check
    train, test, info = images.train, images.test, images.info
    # The network the set was distilled for, which is the global model's in a simulation.
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=train.images.shape[-1],
                     network=getattr(synthetic.config, "network", NetworkSpec()))
    settings = TrainSettings(epochs=limits.train_epochs, seed=seed)
    real_x, real_y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    notes: list[str] = []

    feature_settings = TrainSettings(epochs=min(_FEATURE_EPOCHS, limits.train_epochs), seed=seed)
    feature_net = _trained(spec, real_x, real_y, feature_settings, device, check)
    found = memorisation(synthetic.images, synthetic.labels, real_x, real_y, feature_net.cpu().embed,
                         limits.min_nearest_real_quantile or 0.0)

    check()
    trained_at = time.monotonic()
    target = _trained(spec, synthetic.images, synthetic.targets, settings, device, check)  # soft labels, if released
    counts_per_class = np.bincount(synthetic.labels.numpy(), minlength=info.num_classes).tolist()
    subset = reference_subset(train.labels, counts_per_class, seed)
    reference = _trained(spec, real_x[subset], real_y[subset], settings, device, check)
    # A shadow model is a distillation like the release's and two trainings like these two.
    shadow_estimate = synthetic.seconds + time.monotonic() - trained_at
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
        stop = _shadow_deadline(report_began, limits, time_limit)
        shadow = _shadow_models(synthetic, everything, counts_per_class, spec, settings, device, shadows,
                                limits.shadow_models, stop, shadow_estimate, seed)
        shadow_count = len(shadow.in_synthetic)
        if shadow_count >= _MIN_SHADOWS:
            lira = lira_scores(target_phi, np.stack(shadow.synthetic_phi), np.stack(shadow.in_synthetic))
            attacks["lira"] = evaluate_attack("lira", lira[is_train], lira[~is_train], seed)
            lira_ref = lira_scores(reference_phi, np.stack(shadow.subset_phi), np.stack(shadow.in_subset))
            attacks["reference_lira"] = evaluate_attack("lira", lira_ref[in_subset], lira_ref[~is_train], seed)
        elif limits.shadow_models:
            notes.append(f"LiRA not run: {shadow_count} of {limits.shadow_models} shadow models fitted the time limit")
        if _MIN_SHADOWS <= shadow_count < limits.shadow_models:
            notes.append(f"LiRA on {shadow_count} of {limits.shadow_models} shadow models: the rest did not fit the "
                         "time limit")
    check()

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
    stop: Deadline,
    estimate: float,
    seed: int,
) -> _Shadows:
    """Shadow models on random halves of all the site's images: one distilled like the release, one
    trained on a real subset of the reference's size.

    A shadow starts only when it is expected (``estimate`` seconds for the first, what the last took
    after that) to end before ``stop``; one that runs past ``stop`` anyway is dropped, and no more start.
    """
    rng = np.random.default_rng(seed + 1)
    found = _Shadows([], [], [], [])
    expected = estimate
    for k in range(wanted):
        if stop.left() < expected:
            log.info("privacy report: %d of %d shadow models fit the time limit", k, wanted)
            break
        began = time.monotonic()
        half = np.zeros(len(everything), bool)
        half[rng.permutation(len(everything))[: len(everything) // 2]] = True
        try:
            # The release's settings with the report's seed: the request's seed plays no part in the report.
            config = synthetic.config.model_copy(update={"seed": (seed + 2 + k) % 2**31})
            shadow_set = distill(everything.subset(half), spec.num_classes, config, device, progress=False,
                                 min_real_per_class=shadows.min_real_per_class, time_limit=stop,
                                 soft_labels=synthetic.label_spec)  # a teacher of its own, on its half
            model = _trained(spec, shadow_set.images, shadow_set.targets, settings, device, stop.check)
            picked = np.flatnonzero(half)[reference_subset(everything.labels[half], counts_per_class, seed + k)]
            real = everything.subset(picked)
            subset_model = _trained(spec, torch.from_numpy(real.images), torch.from_numpy(real.labels), settings,
                                    device, stop.check)
        except DataError as exc:  # a half too small to distill: LiRA has what it has
            log.warning("privacy report: shadow model %d not trained (%s)", k + 1, exc)
            break
        except TimeLimitReached:
            log.warning("privacy report: shadow model %d of %d dropped: it ran past the time limit", k + 1, wanted)
            break
        in_subset = np.zeros(len(everything), bool)
        in_subset[picked] = True
        found.synthetic_phi.append(_phi(model, everything, device))
        found.in_synthetic.append(half)
        found.subset_phi.append(_phi(subset_model, everything, device))
        found.in_subset.append(in_subset)
        expected = time.monotonic() - began
        log.info("privacy report: shadow model %d of %d took %.0f s", k + 1, wanted, expected)
    return found


def _shadow_deadline(report_began: float, limits: PrivacyLimits, time_limit: Deadline) -> Deadline:
    """When shadow models must be done: the report's own ``max_seconds`` after it began (``time.monotonic()``),
    or the request's limit less a reserve for what follows them, whichever comes first."""
    ends = []
    if limits.max_seconds is not None:
        ends.append(report_began + limits.max_seconds)
    if time_limit.at is not None:
        ends.append(time_limit.at - min(_RESERVE_SHARE * time_limit.seconds, _MAX_RESERVE_SECONDS))
    return Deadline(min(ends), time_limit.seconds) if ends else NO_LIMIT


def _trained(spec: ModelSpec, images: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
             device: torch.device, check: Callable[[], None] | None = None) -> ConvNet:
    """A fresh model trained on ``images`` with ``labels`` (N,) or soft labels (N, K)."""
    model = build_model(spec)
    train_classifier(model, images.float(), labels, settings, device, check=check)
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
