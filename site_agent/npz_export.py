"""A hospital's own ``.npz`` export with MedMNIST's keys: ``train_images``/``train_labels`` and, optionally,
``val_*`` and ``test_*``; images uint8 (N, H, W) or (N, H, W, C) at any size, labels (N,) or (N, 1).

The file is read without pickles (a data file must not run code); its error messages say what is wrong
with it without naming it (the path goes to ``LocalDataError.local_detail`` only).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from shared.errors import DataError, LocalDataError
from site_agent.labelled import SPLITS


def read_npz_export(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The export's splits: ``{split: (uint8 images (N, H, W[, C]), raw labels)}``, ``train`` always present.

    Raises:
        DataError: the file is not a readable plain-array ``.npz``, lacks the train split, or has half a split.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:  # no pickles: a data file must not run code
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LocalDataError(
            f"the .npz export cannot be read: {_npz_problem(exc, path)}", local_detail=f"unreadable file: {path} ({exc})"
        ) from exc
    raw = {}
    for split in SPLITS:
        present = [key for key in (f"{split}_images", f"{split}_labels") if key in arrays]
        if len(present) == 1:
            raise DataError(f"the .npz export has {present[0]!r} without its partner ({split}_images/{split}_labels)")
        if present:
            raw[split] = (arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if "train" not in raw:
        raise LocalDataError("the .npz export has no 'train_images'/'train_labels' (MedMNIST's keys are expected)",
                             local_detail=f"arrays in the file: {', '.join(sorted(arrays)) or 'none'}")
    return raw


def source_sizes(raw: dict[str, tuple[np.ndarray, np.ndarray]]) -> set[tuple[int, int]]:
    """The (H, W) sizes the export's images are stored at (one per split at most: a split is one array)."""
    return {images.shape[1:3] for images, _ in raw.values() if images.ndim in (3, 4) and len(images)}


def _npz_problem(exc: Exception, path: Path) -> str:
    """What is wrong with an unreadable .npz, in words that carry no path."""
    if isinstance(exc, zipfile.BadZipFile | EOFError):
        return "it is not a complete .npz (zip) archive: truncated, or another kind of file"
    try:
        with path.open("rb") as file:
            start = file.read(6)
    except OSError:
        start = b""
    # numpy tries any file that is neither a zip nor a .npy as a pickle: say what the file is instead.
    if isinstance(exc, ValueError) and not start.startswith((b"PK", b"\x93NUMPY", b"\x80")):
        return "it is not an .npz (zip) archive of arrays: its first bytes are neither a zip's nor numpy's"
    if isinstance(exc, ValueError) and "pickle" in str(exc).lower():
        return "it holds pickled Python objects, which are refused (a data file must not run code); save plain arrays"
    if isinstance(exc, ValueError):
        return "an array in it is damaged or not a plain numpy array"
    return "the file cannot be opened (permissions or a read error)"
