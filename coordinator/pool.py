"""Pooling the accepted synthetic sets into one training set, and what each of their sites committed to.

A site's weight in every pooled figure (the class prior, the tuning counts, the evaluation counts) is
bounded by its :class:`Commitment`: the real training and test images per class it signed in its manifest,
before it saw any model. A site without one (no set in the pool, or a policy that withholds class counts)
is not asked for tuning or evaluation counts, and none of its counts is pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from shared.bundle import OpenedBundle
from shared.manifest import BundleManifest
from shared.metrics import committed_cap
from shared.pooled_training import pooled_arrays


@dataclass(frozen=True)
class Commitment:
    """A site's signed real images per class, training and test (None: withheld), rounded to ``rounding``."""

    train: tuple[int, ...] | None
    test: tuple[int, ...] | None
    rounding: int = 1

    @classmethod
    def of(cls, manifest: BundleManifest, num_classes: int) -> Commitment:
        def per_class(counts: Mapping[int, int] | None) -> tuple[int, ...] | None:
            return None if counts is None else tuple(int(counts.get(c, 0)) for c in range(num_classes))

        return cls(per_class(manifest.real_class_counts), per_class(manifest.real_test_class_counts),
                   manifest.real_class_counts_rounding)

    def excess(self, counts: Sequence[int], part: Literal["train", "test"]) -> str:
        """Why ``counts`` (K,) exceed what was committed for ``part`` (naming the first class), or "" if they do not.

        A count may exceed its rounded commitment by half the rounding (the site's noisy counts are clipped there).
        """
        committed = self.train if part == "train" else self.test
        if committed is None:
            return f"committed no {part} counts"
        for c, (n, promised) in enumerate(zip(counts, committed, strict=True)):
            if int(n) > committed_cap(promised, self.rounding):
                return (f"class {c}: {int(n)} {part} images, more than the {promised} its manifest committed to "
                        f"(rounded to {self.rounding})")
        return ""


def commitments(bundles: Sequence[OpenedBundle], num_classes: int) -> dict[str, Commitment]:
    """Each pooled site's commitment, by site id."""
    return {b.manifest.site_id: Commitment.of(b.manifest, num_classes) for b in bundles}


@dataclass(frozen=True)
class PooledSet:
    """All accepted synthetic images (N, C, H, W) float32 with labels (N,) int64, and who gave how many."""

    images: torch.Tensor
    labels: torch.Tensor
    images_per_site: dict[str, int]
    commitments: dict[str, Commitment] = field(default_factory=dict)  # by site id: what each site signed
    targets: torch.Tensor | None = None  # soft labels (N, K) to train on; None: no site released any

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def prior_shares(self) -> dict[str, float]:
        """Each site's share of the training counts the class prior sums (0 for one that withheld them)."""
        totals = {site: sum(c.train or ()) for site, c in self.commitments.items()}
        everyone = sum(totals.values())
        return {site: n / everyone if everyone else 0.0 for site, n in totals.items()}


def pool(bundles: list[OpenedBundle]) -> PooledSet:
    """Concatenate the accepted sets, in site-id order so the result does not depend on arrival order."""
    if not bundles:
        raise ValueError("cannot pool an empty list of bundles")
    ordered = sorted(bundles, key=lambda b: b.manifest.site_id)
    num_classes = ordered[0].manifest.num_classes
    images, labels, targets = pooled_arrays(
        ((b.manifest.site_id, b.images, b.labels, b.soft_labels) for b in ordered), num_classes)
    return PooledSet(images, labels, {b.manifest.site_id: len(b.labels) for b in ordered},
                     commitments(ordered, num_classes), targets)
