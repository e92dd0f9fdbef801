"""Receiving bundles: open (decrypt + verify) each one, check it against what was asked, accept or reject.

Parse at the door: every failure becomes an ``InvalidBundle`` subclass with one-sentence reason, and
code after :func:`receive_bundle` trusts what it gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from coordinator.trust import CoordinatorKeys
from shared.bundle import MAX_ABS_PIXEL, BundleHeader, OpenedBundle, SealedBundle
from shared.errors import InvalidBundle, ReplayError, VerificationError
from shared.manifest import DPGuarantee, Preprocessing, PrivacySummary
from shared.methods import DPDMConfig, SoftLabelSpec
from shared.schemas import DistillRequest


@dataclass(frozen=True)
class Expectation:
    """What a bundle from one node must match: the request sent to that node, the dataset's shape and,
    for a node registered under a site id, that site (``None`` in simulation: the bundle names its site)."""

    request: DistillRequest
    image_shape: tuple[int, int, int]
    num_classes: int
    max_bytes: int
    site_id: str | None = None


def receive_bundle(
    sealed: bytes, expected: Expectation, keys: CoordinatorKeys, delivered_sites: set[str]
) -> OpenedBundle:
    """Open one sealed bundle and validate it; returns it only if everything holds.

    The clear header is checked against the request before anything is decrypted; it is trusted
    only once decryption (it is bound into the HPKE info) and the signed manifest agree with it.

    Raises:
        InvalidBundle: malformed, too large, or its contents break the request.
        ReplayError: another run's or another request's bundle, or a site that already delivered.
        VerificationError: the bundle names another site than the node's registered one.
        DecryptionError, VerificationError: see ``shared.bundle.SealedBundle.open``.
    """
    bundle = SealedBundle.from_bytes(sealed, expected.max_bytes)
    check_header(bundle.header, expected, delivered_sites)
    opened = bundle.open(keys.private_key, keys.verify_key_for)
    check_contents(opened, expected)
    return opened


def check_header(header: BundleHeader, expected: Expectation, delivered_sites: set[str]) -> None:
    """Check a bundle's clear header against the request sent to its node, before decrypting it.

    Raises:
        VerificationError: the header names another site than the node's registered one.
        ReplayError: another run, another nonce, or a site that already delivered.
    """
    if expected.site_id is not None and header.site_id != expected.site_id:
        raise VerificationError(
            f"bundle claims site {header.site_id!r}, but it came from the Flower node registered as "
            f"{expected.site_id!r}"
        )
    if header.run_id != expected.request.run_id:
        raise ReplayError(f"bundle belongs to run {header.run_id!r}, not to this run")
    if header.nonce != expected.request.nonce:
        raise ReplayError("bundle answers another request (nonce differs from the one sent to this node)")
    if header.site_id in delivered_sites:
        raise ReplayError(f"site {header.site_id!r} already delivered a bundle in this run")


def check_contents(opened: OpenedBundle, expected: Expectation) -> None:
    """Check a decrypted, verified bundle against the request.

    Raises:
        InvalidBundle: naming the first field that does not match.
    """
    manifest, request = opened.manifest, expected.request
    if manifest.dataset != request.dataset:
        raise InvalidBundle(f"bundle dataset is {manifest.dataset!r}, {request.dataset!r} was requested")
    if manifest.round != request.round:
        raise ReplayError(f"bundle answers round {manifest.round}, this is round {request.round}")
    if manifest.distill != request.distill:
        raise InvalidBundle("bundle's distillation settings differ from those requested")
    if manifest.soft_labels is not None and manifest.soft_labels != request.soft_labels:  # a site may decline them
        raise InvalidBundle("bundle's soft labels were made otherwise than requested (or were not requested)")
    config = request.distill
    if isinstance(config, DPDMConfig) and (manifest.dp is None or (manifest.dp.epsilon, manifest.dp.delta)
                                           != (config.epsilon, config.delta)):
        raise InvalidBundle("a dpdm bundle must carry the differential-privacy guarantee (epsilon, delta) requested")
    if tuple(manifest.image_shape) != expected.image_shape or manifest.num_classes != expected.num_classes:
        raise InvalidBundle(
            f"bundle image shape {tuple(manifest.image_shape)} / {manifest.num_classes} classes, "
            f"expected {expected.image_shape} / {expected.num_classes}"
        )
    labels = opened.labels
    if labels.min() < 0 or labels.max() >= expected.num_classes:
        raise InvalidBundle(f"bundle labels must lie in 0..{expected.num_classes - 1}")
    counts = np.bincount(labels, minlength=expected.num_classes)
    if {c: int(n) for c, n in enumerate(counts) if n} != manifest.class_counts:
        raise InvalidBundle("bundle class_counts do not match its labels")
    if manifest.real_class_counts is not None and set(manifest.real_class_counts) != set(range(expected.num_classes)):
        raise InvalidBundle(f"bundle real_class_counts must give a count for each of the {expected.num_classes} classes")
    if sorted(manifest.class_counts) != sorted(manifest.label_set):
        raise InvalidBundle("bundle label_set does not match its class_counts")
    if counts.max() > request.distill.ipc:
        raise InvalidBundle(f"bundle has {counts.max()} images for one class, more than the requested ipc {request.distill.ipc}")
    if not np.isfinite(opened.images).all():
        raise InvalidBundle("bundle images contain NaN or infinite values")
    if np.abs(opened.images).max() > MAX_ABS_PIXEL:
        raise InvalidBundle(f"bundle image values exceed +-{MAX_ABS_PIXEL:g} (not normalised images)")


class OutcomeStatus(StrEnum):
    """What came of asking one site for its bundle."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # with the reason
    MISSING = "missing"  # never connected, or no reply in time
    AWAITING_APPROVAL = "awaiting-approval"  # the site holds its release for its operator's review
    REJECTED_AT_SITE = "rejected-at-site"  # the site's reviewer rejected its release (with their reason)


@dataclass(frozen=True)
class SiteOutcome:
    """What came of asking one node for its bundle: accepted, rejected (with the reason), missing, awaiting the
    site's approval, or rejected by the site's reviewer."""

    node_id: int | None  # None: the site never connected
    site_id: str | None
    status: OutcomeStatus
    reason: str = ""
    bundle_bytes: int = 0
    metrics: dict[str, float] | None = None
    privacy: PrivacySummary | None = None  # the privacy report signed into an accepted bundle's manifest
    dp: DPGuarantee | None = None  # the differential-privacy guarantee signed into it (dpdm)
    class_counts: dict[int, int] | None = None  # an accepted set's synthetic images per class
    real_class_counts: dict[int, int] | None = None  # the real training images per class it released, if any
    preprocessing: Preprocessing | None = None  # how the site resized its images, as its manifest records it
    soft_labels: SoftLabelSpec | None = None  # how its teacher labelled the set, as its manifest records it

    @classmethod
    def accepted(cls, node_id: int | None, bundle: OpenedBundle, reason: str = "",
                 metrics: dict[str, float] | None = None) -> SiteOutcome:
        """An accepted bundle's outcome: its site, size and the figures signed into its manifest."""
        manifest = bundle.manifest
        return cls(node_id, manifest.site_id, OutcomeStatus.ACCEPTED, reason, bundle.sealed_bytes, metrics,
                   manifest.privacy, manifest.dp, manifest.class_counts, manifest.real_class_counts,
                   manifest.preprocessing, manifest.soft_labels)
