"""Pooling the accepted synthetic sets into one training set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.bundle import OpenedBundle


@dataclass(frozen=True)
class PooledSet:
    """All accepted synthetic images (N, C, H, W) float32 with labels (N,) int64, and who gave how many."""

    images: torch.Tensor
    labels: torch.Tensor
    images_per_site: dict[str, int]

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


def pool(bundles: list[OpenedBundle]) -> PooledSet:
    """Concatenate the accepted sets, in site-id order so the result does not depend on arrival order."""
    if not bundles:
        raise ValueError("cannot pool an empty list of bundles")
    ordered = sorted(bundles, key=lambda b: b.manifest.site_id)
    images = torch.from_numpy(np.concatenate([b.images for b in ordered]))
    labels = torch.from_numpy(np.concatenate([b.labels for b in ordered]))
    return PooledSet(images, labels, {b.manifest.site_id: len(b.labels) for b in ordered})
