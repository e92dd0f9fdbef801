"""A picture of a synthetic set: one row per class, images upscaled, for people to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from shared.datasets import denormalize

CELL = 84  # pixels per image in the grid: 3x a 28-pixel MedMNIST image
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


TITLE_HEIGHT = 24


def titled_stack(blocks: list[tuple[str, Image.Image]]) -> Image.Image:
    """Grids stacked top to bottom, each under a band naming it (e.g. the site that made it)."""
    width = max(grid.width for _, grid in blocks)
    canvas = Image.new("RGB", (width, sum(TITLE_HEIGHT + grid.height for _, grid in blocks)), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for title, grid in blocks:
        draw.rectangle((0, top, width, top + TITLE_HEIGHT - 1), fill=(230, 230, 230))
        draw.text((4, top + 6), title[:80], fill="black")
        canvas.paste(grid, (0, top + TITLE_HEIGHT))
        top += TITLE_HEIGHT + grid.height
    return canvas
