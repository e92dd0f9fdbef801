"""Releasing a synthetic set: describe it in a manifest, sign it, encrypt it to the pinned coordinator key.

This is the only way anything derived from local images leaves a site.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from shared import crypto
from shared.bundle import MAX_ABS_PIXEL, encode_payload, payload_info, seal_bundle
from shared.datasets import DatasetInfo
from shared.errors import DataError
from shared.manifest import BundleManifest, DPGuarantee, Preprocessing, PrivacySummary
from shared.schemas import DistillRequest
from shared.software import software_versions
from site_agent.distill import SyntheticSet
from site_agent.identity import SiteIdentity


def build_manifest(
    synthetic: SyntheticSet,
    request: DistillRequest,
    identity: SiteIdentity,
    info: DatasetInfo,
    num_real_examples: int,
    payload: bytes,
    real_class_counts: dict[int, int] | None = None,
    real_class_counts_rounding: int = 1,
    privacy: PrivacySummary | None = None,
    real_test_class_counts: dict[int, int] | None = None,
    preprocessing: Preprocessing | None = None,
) -> BundleManifest:
    """The signed self-description of a release (with its DP guarantee when the method is private)."""
    counts = np.bincount(synthetic.labels.numpy(), minlength=info.num_classes)
    dp = synthetic.dp
    guarantee = None if dp is None else DPGuarantee(
        epsilon=dp.epsilon, delta=dp.delta, mechanism=dp.mechanism, accountant=dp.accountant,
        noise_multiplier=dp.noise_multiplier, sensitivity=dp.sensitivity)
    return BundleManifest(
        site_id=identity.site_id,
        run_id=request.run_id,
        nonce=request.nonce,
        recipient_fingerprint=crypto.fingerprint(identity.coordinator_key),
        dataset=info.name,
        task=info.task,
        image_shape=tuple(synthetic.images.shape[1:]),
        num_classes=info.num_classes,
        label_set=synthetic.classes,
        class_counts={c: int(counts[c]) for c in synthetic.classes},
        num_real_examples=num_real_examples,
        real_class_counts=real_class_counts,
        real_class_counts_rounding=real_class_counts_rounding,
        real_test_class_counts=real_test_class_counts,
        round=request.round,
        privacy=privacy,
        dp=guarantee,
        preprocessing=preprocessing,
        distill=synthetic.config,
        soft_labels=synthetic.label_spec,
        iterations_completed=len(synthetic.loss_history),
        software=software_versions(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        payload=payload_info(payload, count=len(synthetic.labels)),
    )


@dataclass(frozen=True)
class SealedRelease:
    """A sealed bundle with the manifest and set inside it; only ``sealed`` ever leaves the site."""

    sealed: bytes
    manifest: BundleManifest
    synthetic: SyntheticSet


def seal_release(
    synthetic: SyntheticSet,
    request: DistillRequest,
    identity: SiteIdentity,
    info: DatasetInfo,
    num_real_examples: int,
    real_class_counts: dict[int, int] | None = None,
    real_class_counts_rounding: int = 1,
) -> bytes:
    """Manifest + payload, signed by the site and sealed to its pinned coordinator key.

    ``real_class_counts`` (the site's training images per class, as its policy releases them) go into
    the signed manifest; None withholds them.

    Raises:
        DataError: the synthetic set holds non-finite or absurd values (never released).
    """
    return seal_described(synthetic, request, identity, info, num_real_examples, real_class_counts,
                          real_class_counts_rounding).sealed


def seal_described(
    synthetic: SyntheticSet,
    request: DistillRequest,
    identity: SiteIdentity,
    info: DatasetInfo,
    num_real_examples: int,
    real_class_counts: dict[int, int] | None = None,
    real_class_counts_rounding: int = 1,
    privacy: PrivacySummary | None = None,
    real_test_class_counts: dict[int, int] | None = None,
    preprocessing: Preprocessing | None = None,
) -> SealedRelease:
    """:func:`seal_release`, keeping the manifest and set for the site's own previews and approvals.

    ``privacy`` is the site's privacy report in numbers, signed into the manifest. ``real_test_class_counts``
    (its test images per class, rounded like the training ones; None withholds them) and ``real_class_counts``
    are the site's commitment: the coordinator pools no more of its evaluation and tuning counts than these.
    ``preprocessing`` (``SiteImages.preprocessing``) says how the site resized its images before distilling.
    """
    if not bool(synthetic.images.isfinite().all()):
        raise DataError("distillation produced non-finite synthetic images; nothing was released")
    if float(synthetic.images.abs().max()) > MAX_ABS_PIXEL:
        raise DataError(
            f"distillation produced pixel values beyond +-{MAX_ABS_PIXEL:g}; nothing was released",
            hint="the method diverged: lower its image learning rate (--lr-img)",
        )
    soft = None if synthetic.soft_labels is None else synthetic.soft_labels.numpy()
    payload = encode_payload(synthetic.images.numpy(), synthetic.labels.numpy(), soft)
    manifest = build_manifest(synthetic, request, identity, info, num_real_examples, payload, real_class_counts,
                              real_class_counts_rounding, privacy, real_test_class_counts, preprocessing)
    return SealedRelease(seal_bundle(manifest, payload, identity.signing_key, identity.coordinator_key), manifest, synthetic)
