"""Memorisation: how close each synthetic image sits to the site's real training images.

For every synthetic image we find its nearest real training image (any class) three ways: L2 in
pixel space, L2 in the feature space of a network trained on the site's own images, and SSIM
(structural similarity, scikit-image's). A distance means little on its own, so it is ranked against
the real data itself: for each real image of the class, the distance to its nearest *other* real
image. A synthetic image whose nearest-real distance sits below the ``flag_quantile`` of that
real-to-real distribution is closer to a patient's image than patients' images are to each other:
flagged. A copied image sits at distance 0 (rank 0); a slightly noised copy just above it.

Synthetic images that duplicate each other (pixel correlation at least 0.99) are counted too: a set
of identical images wastes its budget and often means a class collapsed to one real image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

# SSIM is compared against the few real images nearest in pixel or feature space, not all of them:
# the maximum is almost always among those, and all pairs would cost S x R calls.
_SSIM_CANDIDATES = 16
_DUPLICATE_CORRELATION = 0.99

Embed = Callable[[torch.Tensor], torch.Tensor]  # images (N, C, H, W) -> features (N, D)


@dataclass(frozen=True)
class NearestReal:
    """One synthetic image's nearest real training image, by each measure, and where it ranks."""

    pixel_l2: float
    feature_l2: float
    ssim: float  # the highest SSIM with any candidate real image (1: identical)
    pixel_rank: float  # fraction of real-to-real nearest distances of its class at or below pixel_l2
    feature_rank: float
    flagged: bool


@dataclass(frozen=True)
class Memorisation:
    """The nearest-neighbour findings for a whole synthetic set."""

    images: list[NearestReal]
    flag_quantile: float
    duplicates: int  # synthetic pairs with pixel correlation >= 0.99

    @property
    def flagged(self) -> int:
        return sum(image.flagged for image in self.images)

    @property
    def min_rank(self) -> float:
        """The lowest rank of any synthetic image in pixel or feature space (0: a copy)."""
        return min((min(i.pixel_rank, i.feature_rank) for i in self.images), default=1.0)

    @property
    def max_ssim(self) -> float:
        return max((i.ssim for i in self.images), default=0.0)


def memorisation(
    synthetic: torch.Tensor,
    synthetic_labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    embed: Embed,
    flag_quantile: float,
) -> Memorisation:
    """Nearest real image of every synthetic image (S, C, H, W), ranked against real-to-real distances."""
    real, synthetic = real.float(), synthetic.float()
    real_features, synthetic_features = _features(embed, real), _features(embed, synthetic)
    pixel = _distances(synthetic.flatten(1), real.flatten(1))  # (S, R)
    feature = _distances(synthetic_features, real_features)
    reference_pixel = _real_to_real(real.flatten(1), real_labels)
    reference_feature = _real_to_real(real_features, real_labels)
    found = []
    for s in range(len(synthetic)):
        label = int(synthetic_labels[s])
        candidates = torch.cat([pixel[s].topk(min(_SSIM_CANDIDATES, len(real)), largest=False).indices,
                                feature[s].topk(min(_SSIM_CANDIDATES, len(real)), largest=False).indices]).unique()
        pixel_rank = _rank(float(pixel[s].min()), reference_pixel.get(label))
        feature_rank = _rank(float(feature[s].min()), reference_feature.get(label))
        found.append(NearestReal(
            pixel_l2=float(pixel[s].min()), feature_l2=float(feature[s].min()),
            ssim=max(_ssim(synthetic[s], real[int(r)]) for r in candidates),
            pixel_rank=pixel_rank, feature_rank=feature_rank,
            flagged=min(pixel_rank, feature_rank) < flag_quantile,
        ))
    return Memorisation(found, flag_quantile, _duplicates(synthetic))


def _features(embed: Embed, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([embed(images[i : i + batch]).flatten(1).float().cpu() for i in range(0, len(images), batch)])


def _real_to_real(points: torch.Tensor, labels: torch.Tensor) -> dict[int, np.ndarray]:
    """Per class, each real image's distance to its nearest other real image of the class (sorted)."""
    nearest = {}
    for label in labels.unique().tolist():
        members = points[labels == label]
        if len(members) < 2:
            continue
        distances = _distances(members, members)
        distances.fill_diagonal_(float("inf"))
        nearest[label] = np.sort(distances.min(dim=1).values.numpy())
    return nearest


def _rank(distance: float, reference: np.ndarray | None) -> float:
    """Fraction of the reference distances at or below ``distance``; 0 for a class without a reference
    (a class of one real image: any synthetic image of it is as close to a patient as it gets)."""
    if reference is None or len(reference) == 0:
        return 0.0
    return float(np.searchsorted(reference, distance, side="right")) / len(reference)


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two normalised images (C, H, W) with pixels in [-1, 1]."""
    x, y = a.numpy().transpose(1, 2, 0), b.numpy().transpose(1, 2, 0)
    return float(structural_similarity(x, y, data_range=2.0, channel_axis=2))


def _duplicates(images: torch.Tensor) -> int:
    flat = images.flatten(1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / (flat.norm(dim=1, keepdim=True) + 1e-8)
    correlation = flat @ flat.T
    return int((correlation.triu(diagonal=1) >= _DUPLICATE_CORRELATION).sum())


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise L2 (cdist's fast matrix-product form rounds a copy's 0 up to ~1e-3)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
