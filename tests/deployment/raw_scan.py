"""Search stored bytes for raw images: each image as uint8 and in the float encodings the project uses.

An image is looked for by short windows of its bytes at several offsets (a sliding window), so an image
stored inside a larger blob, or split across SQLite pages, is still found by the windows that stay whole.
Windows with little variety (a black border) are skipped: they would match any image's background.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.datasets import normalize

WINDOW_PIXELS = 48  # pixels per window: 48 bytes at uint8, 96 at float16, 192 at float32, 384 at float64
WINDOWS_PER_IMAGE = 4
MIN_DISTINCT_PIXELS = 16  # a window must hold this many distinct values to be looked for


@dataclass(frozen=True)
class Finding:
    image: int
    encoding: str
    where: str


def encodings(images_uint8: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Per encoding, each image as the flat array its bytes would come from."""
    normalised = normalize(images_uint8)  # (N, C, H, W) float32, as the sites hold their images
    return {
        "uint8": [image.reshape(-1) for image in images_uint8],
        "float16": [image.astype("<f2").reshape(-1) for image in normalised],
        "float32": [image.astype("<f4").reshape(-1) for image in normalised],
        "float64": [image.astype("<f8").reshape(-1) for image in normalised],
    }


def windows(flat: np.ndarray) -> Iterator[bytes]:
    """Up to WINDOWS_PER_IMAGE varied windows of WINDOW_PIXELS pixels, spread over the image."""
    starts = np.linspace(0, max(len(flat) - WINDOW_PIXELS, 0), WINDOWS_PER_IMAGE * 4).astype(int)
    found = 0
    for start in starts:
        window = flat[start:start + WINDOW_PIXELS]
        if len(np.unique(window)) >= MIN_DISTINCT_PIXELS:
            yield window.tobytes()
            found += 1
            if found == WINDOWS_PER_IMAGE:
                return


def stored_files(paths: Iterable[Path]) -> dict[str, bytes]:
    """Every file under the given files or folders, by path."""
    out = {}
    for path in paths:
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            out[str(file)] = file.read_bytes()
    return out


def find_raw_images(images_uint8: np.ndarray, stored: dict[str, bytes]) -> list[Finding]:
    """Every (image, encoding) of which a window occurs in a stored file."""
    everything = b"".join(stored.values())  # one search per window; the file is looked up only on a hit
    findings = []
    for encoding, flats in encodings(images_uint8).items():
        for index, flat in enumerate(flats):
            for window in windows(flat):
                if window in everything:
                    where = next((name for name, data in stored.items() if window in data), "(across two files)")
                    findings.append(Finding(index, encoding, where))
                    break
    return findings
