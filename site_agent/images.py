"""Bringing a site's images to the federation's size: a centre crop to a square, then a LANCZOS resize.

Hospitals export images at their native size (a blood-smear cell at 360x363, a microscope tile at
128x128); the federation distills and trains at ``shared.datasets.IMAGE_SIZE`` (28x28). The site
resizes each image itself, as MedMNIST made its files:

1. a non-square image loses the edges of its longer side: the central S x S square is kept, with
   S = min(H, W), top = (H - S) // 2 and left = (W - S) // 2;
2. PIL's LANCZOS filter resizes that square to ``size`` x ``size`` (when shrinking, its kernel widens
   with the reduction, so it averages over each target pixel's area rather than aliasing).

An image already ``size`` x ``size`` is left as it is. What was done is told by a
:class:`shared.schemas.Preprocessing`, which a release signs into its manifest and ``site-agent
check`` prints; None means nothing was done.

    >>> fit_image(np.zeros((40, 32), np.uint8)).shape  # 40 rows, 32 columns: cropped to 32x32, then resized
    (28, 28)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from shared.datasets import IMAGE_SIZE
from shared.manifest import Preprocessing, ResizeMethod


def fit_image(pixels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """One uint8 image (H, W) or (H, W, 3) -> (size, size) or (size, size, 3): centre crop to a square, LANCZOS."""
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def fit_images(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) -> (N, size, size) or (N, size, size, 3), each by :func:`fit_image`."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([fit_image(image, size) for image in images])


def preprocessing_of(source_sizes: Iterable[tuple[int, int]], size: int = IMAGE_SIZE) -> Preprocessing | None:
    """What :func:`fit_image` does to images of these (H, W) sizes; None when all are ``size`` x ``size`` already."""
    sizes = set(source_sizes)
    if sizes <= {(size, size)}:
        return None
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    return Preprocessing(smallest_source=(min(heights), min(widths)), largest_source=(max(heights), max(widths)),
                         cropped=any(h != w for h, w in sizes), resized_to=size, method=ResizeMethod.LANCZOS)
