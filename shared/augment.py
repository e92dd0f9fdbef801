"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

Each call picks one transform family at random (colour, crop, cutout, flip, scale, rotate, as in the
paper's single-augmentation mode) and applies it differentiably, so gradients flow back to the
synthetic images. "Siamese" means the real and the synthetic batch of a matching step get the *same*
transform: call :func:`dsa` on both with the same ``seed``. With ``per_sample=False`` one set of
parameters serves the whole batch (matching); with ``per_sample=True`` each image draws its own
(training a model on a synthetic set).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")
_SCALE = 1.2  # scale factors in [1/1.2, 1.2]
_ROTATE_DEG = 15.0
_CROP = 0.125  # translate by up to 1/8 of the side
_CUTOUT = 0.5  # erase a square of half the side
_BRIGHTNESS = 1.0
_SATURATION = 2.0
_CONTRAST = 0.5


def dsa(x: torch.Tensor, seed: int, per_sample: bool = False) -> torch.Tensor:
    """Augment a batch (N, C, H, W); the same ``seed`` gives the same transform on any batch."""
    gen = torch.Generator().manual_seed(seed)
    family = TRANSFORMS[int(torch.randint(len(TRANSFORMS), (1,), generator=gen))]
    n = x.shape[0] if per_sample else 1

    def rand(*shape: int) -> torch.Tensor:
        # Drawn on the CPU generator so results agree across devices, then moved to x's device.
        return torch.rand((n, *shape), generator=gen).to(device=x.device, dtype=x.dtype)

    if family == "color":
        x = x + (rand(1, 1, 1) - 0.5) * _BRIGHTNESS
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand(1, 1, 1) * _SATURATION) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (rand(1, 1, 1) + _CONTRAST) + mean
    if family == "flip":
        flip = rand(1, 1, 1) < 0.5
        return torch.where(flip, x.flip(3), x)
    if family == "cutout":
        return _cutout(x, rand(2))
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    if family == "crop":
        shift = (rand(2) - 0.5) * 2 * _CROP * 2  # in grid units: the side spans 2
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
    elif family == "scale":
        s = rand(2) * (_SCALE - 1.0 / _SCALE) + 1.0 / _SCALE
        theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    else:  # rotate
        angle = (rand(1)[:, 0] - 0.5) * 2 * math.radians(_ROTATE_DEG)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    theta = theta.expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _cutout(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Zero a square of side ``_CUTOUT * H`` centred at ``centres`` (n, 2) in [0, 1)."""
    _, _, h, w = x.shape
    half_h, half_w = int(h * _CUTOUT / 2 + 0.5), int(w * _CUTOUT / 2 + 0.5)
    cy = (centres[:, 0] * h).long().view(-1, 1, 1)
    cx = (centres[:, 1] * w).long().view(-1, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - cy).abs() < half_h) & ((cols - cx).abs() < half_w)  # (n, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)
