"""A picture of a synthetic set: one row per class, images upscaled, for people to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from shared.datasets import denormalize

CELL = 56  # pixels per image in the grid
LABEL_WIDTH = 140
MAX_PER_ROW = 30


def image_grid(images: np.ndarray, labels: np.ndarray, label_names: dict[int, str]) -> Image.Image:
    """Normalised images (N, C, H, W) with labels (N,) -> an RGB grid, one row per class of ``label_names``.

    Each row shows up to ``MAX_PER_ROW`` images of its class; a class without images is an empty row.
    """
    rows = [(c, images[labels == c][:MAX_PER_ROW]) for c in sorted(label_names)]
    width = LABEL_WIDTH + CELL * max(1, max(len(imgs) for _, imgs in rows))
    canvas = Image.new("RGB", (width, CELL * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (cls, class_images) in enumerate(rows):
        draw.text((4, row * CELL + CELL // 2 - 6), f"{cls}: {label_names[cls][:18]}", fill="black")
        for col, pixels in enumerate(denormalize(class_images) if len(class_images) else []):  # (H, W, C) each
            tile = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
            canvas.paste(tile.resize((CELL, CELL), Image.NEAREST), (LABEL_WIDTH + col * CELL, row * CELL))
    return canvas
