"""A last check before release: is any synthetic image a near copy of one of the site's real images?

Similarity is the Pearson correlation of pixels, maximised over small shifts (so a translated crop
of a real image still counts as a copy). Distilled images from noise sit far below the threshold;
an image copied from a patient, or one barely moved from a real-image initialisation, sits near 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_real_similarity(synthetic: torch.Tensor, real: torch.Tensor, max_shift: int = 2) -> float:
    """Highest correlation between any synthetic (S, C, H, W) and any real (R, C, H, W) image over shifts."""
    return float(nearest_real_similarities(synthetic, real, max_shift).max())


def nearest_real_similarities(synthetic: torch.Tensor, real: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Each synthetic image's highest correlation (S,) with any real (R, C, H, W) image over shifts."""
    best = torch.full((len(synthetic),), -1.0)
    _, _, h, w = synthetic.shape
    padded = F.pad(real.float(), (max_shift,) * 4)
    for dy in range(2 * max_shift + 1):
        for dx in range(2 * max_shift + 1):
            shifted = padded[:, :, dy : dy + h, dx : dx + w]
            m = max_shift
            # Compare only the window where the shifted real image has pixels.
            window = (slice(max(0, m - dy), h - max(0, dy - m)), slice(max(0, m - dx), w - max(0, dx - m)))
            a = _standardize(synthetic.float()[:, :, window[0], window[1]])
            b = _standardize(shifted[:, :, window[0], window[1]])
            best = torch.maximum(best, (a @ b.T).max(dim=1).values.cpu())
    return best


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Flatten each image and scale it to zero mean and unit norm, so a dot product is a correlation."""
    flat = x.flatten(1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat / (flat.norm(dim=1, keepdim=True) + 1e-8)
