"""A hospital's own ``.npz`` export with MedMNIST's keys: ``train_images``/``train_labels`` and, optionally,
``val_*`` and ``test_*``; images uint8 (N, H, W) or (N, H, W, C) at any size, labels (N,) or (N, 1).

An export whose images were already brought to the federation's size (a simulation's share of a larger
source, or a hospital that resized before exporting) may say how in a ``preprocessing`` entry: a string
holding a :class:`shared.manifest.Preprocessing` as JSON. Its images must then be at that record's size, and
the site signs the record into its manifest as if it had resized them itself.

The file is read without pickles (a data file must not run code); its error messages say what is wrong
with it without naming it (the path goes to ``LocalDataError.local_detail`` only).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from shared.errors import DataError, LocalDataError
from shared.fields import first_problem
from shared.manifest import Preprocessing
from site_agent.images import preprocessing_of
from site_agent.labelled import SPLITS

PREPROCESSING_KEY = "preprocessing"  # how the export's images were resized before it was written, if they were


def read_npz_export(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Preprocessing | None]:
    """The export's splits, ``{split: (uint8 images (N, H, W[, C]), raw labels)}`` with ``train`` always present;
    and how its images are brought to the federation's size (declared, or what the site will do; None: nothing).

    Raises:
        DataError: the file is not a readable plain-array ``.npz``, lacks the train split, has half a split, or
            declares a preprocessing its images do not fit.
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
    sizes = {images.shape[1:3] for images, _ in raw.values() if images.ndim in (3, 4) and len(images)}  # (H, W)
    declared = arrays.get(PREPROCESSING_KEY)
    return raw, preprocessing_of(sizes) if declared is None else _declared(declared, sizes)


def _declared(entry: np.ndarray, sizes: set[tuple[int, int]]) -> Preprocessing:
    """The export's own record of how its images were resized, checked against the sizes they are stored at."""
    try:
        record = Preprocessing.model_validate_json(str(entry))
    except ValidationError as exc:
        raise DataError(f"the .npz export's {PREPROCESSING_KEY!r} entry is not a resize record: "
                        f"{first_problem(exc)}") from None
    side = record.resized_to
    if sizes != {(side, side)}:
        raise DataError(f"the .npz export's {PREPROCESSING_KEY!r} entry says its images were resized to "
                        f"{side}x{side}, but they are stored at another size")
    return record


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
