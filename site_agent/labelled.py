"""Labelled images as every stage uses them, and the one check that makes them from a file's raw arrays.

Whatever format a site's data comes in (``site_agent.data``), each split ends as :class:`LabelledImages`:
images normalised to float32 (N, C, H, W) in [-1, 1] (``shared.datasets.normalize``) and labels int64 (N,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.datasets import IMAGE_SIZE, DatasetInfo, normalize
from shared.errors import DataError
from shared.manifest import Preprocessing
from site_agent.images import fit_images

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelledImages:
    """Normalised images (N, C, H, W) float32 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class SiteImages:
    """What one site holds: a train part (distilled) and a test part (evaluation); never leaves the site."""

    info: DatasetInfo
    train: LabelledImages
    test: LabelledImages
    preprocessing: Preprocessing | None = None  # how the images were resized to IMAGE_SIZE; None: not at all


def validated(
    split: str, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, size: int = IMAGE_SIZE, fit: bool = False
) -> LabelledImages:
    """Check one split's raw arrays against the dataset and normalise them; ``fit`` resizes them to ``size``.

    Args:
        images: uint8 (N, H, W) or (N, H, W, C) pixels as stored.
        labels: integer class indices (N,) or (N, 1).

    Raises:
        DataError: naming the split and the first thing wrong with it.
    """
    if len(images) == 0:
        raise DataError(f"split {split!r} holds no images")
    if images.dtype != np.uint8:
        raise DataError(f"split {split!r} images are {images.dtype}, expected uint8 pixels 0..255")
    if images.ndim not in (3, 4) or 0 in images.shape[1:3]:
        raise DataError(f"split {split!r} images have shape {images.shape}, expected (N, H, W) or (N, H, W, C) "
                        "with H and W at least 1")
    channels = 1 if images.ndim == 3 else images.shape[3]
    if channels != info.in_channels:
        raise DataError(f"split {split!r} images have {channels} channel(s); {info.name} has {info.in_channels}")
    if images.ndim == 4 and channels == 1:
        images = images[..., 0]  # (N, H, W)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"split {split!r} labels are {labels.dtype}, expected integer class indices")
    if labels.shape not in ((len(images),), (len(images), 1)):
        raise DataError(f"split {split!r} has {len(images)} images but labels of shape {labels.shape}")
    labels = labels.reshape(-1).astype(np.int64)
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise DataError(f"split {split!r} has labels outside 0..{info.num_classes - 1} ({info.name})")
    if fit:
        images = fit_images(images, size)  # (N, size, size[, C])
    elif images.shape[1:3] != (size, size):  # a MedMNIST file holds the size it is named for
        raise DataError(f"split {split!r} images are {images.shape[2]}x{images.shape[1]}, not {size}x{size}")
    return LabelledImages(normalize(images), labels)
