"""Official MedMNIST files (``<flag>.npz``), read by the ``medmnist`` package's own loader after an MD5 check.

A site reads such a file where its hospital put it and never downloads one (``download=False``); only the
simulation harness fetches files (``harness.source``). With ``download=False`` medmnist checks no MD5, so
this module checks it against ``medmnist.INFO`` first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from shared.datasets import IMAGE_SIZE, MEDMNIST_ROOT_ENV, DatasetInfo, dataset_info, resolve_data_root
from shared.errors import DataError
from site_agent.labelled import SPLITS, LabelledImages, validated

# Where a missing official file is to come from, for the hint of the error that finds it missing.
FETCH_HINT = ("`coordinator simulate --download` (or `study --download`) fetches an official MedMNIST file for a "
              "simulation; a site never downloads: put the hospital's file or images at its --data path")


def official_file_name(info: DatasetInfo, size: int = IMAGE_SIZE) -> str:
    """``breastmnist.npz`` at 28x28, ``breastmnist_64.npz`` at 64x64: medmnist's own file names."""
    return f"{info.name}{'' if size == IMAGE_SIZE else f'_{size}'}.npz"


def dataset_of_file(path: str | os.PathLike[str]) -> str | None:
    """The MedMNIST flag an official file is named after (``.../breastmnist.npz`` -> ``breastmnist``), else None."""
    from medmnist import INFO

    file = Path(path)
    return file.stem if file.suffix == ".npz" and file.stem in INFO else None


def medmnist_class(info: DatasetInfo) -> type:
    """The ``medmnist`` package's dataset class for ``info`` (``BreastMNIST`` for breastmnist)."""
    import medmnist  # pulls in torchvision: imported only when a file is read

    return getattr(medmnist, medmnist.INFO[info.name]["python_class"])


def read_medmnist(
    info: DatasetInfo, path: Path, verify_md5: bool, size: int = IMAGE_SIZE, splits: tuple[str, ...] = SPLITS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits of an official file: ``{split: (uint8 images (N, H, W[, C]), labels (N, 1))}``.

    Raises:
        DataError: the MD5 differs from the official one (when checked), or medmnist cannot read the file.
    """
    if verify_md5 and size in info.md5:
        digest = file_md5(path)
        if digest != info.md5[size]:
            raise DataError(
                f"dataset file {path.name!r} has MD5 {digest}, not the official {info.md5[size]}",
                hint="the file is corrupt or not the official release; re-fetch it, or turn MD5 checks off "
                "for a local export (--no-verify-md5)",
            )
    dataset_class = medmnist_class(info)
    raw = {}
    for split in splits:
        try:
            ds = dataset_class(split=split, root=str(path.parent), download=False, size=size)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"dataset file {path.name!r} cannot be read as MedMNIST ({type(exc).__name__})") from exc
        raw[split] = (np.asarray(ds.imgs), np.asarray(ds.labels))
    return raw


def load_medmnist(
    name: str, data_root: str | os.PathLike[str] | None, size: int = IMAGE_SIZE, verify_md5: bool = True
) -> tuple[DatasetInfo, LabelledImages, LabelledImages]:
    """Load the train and test splits of a MedMNIST 2D dataset without downloading.

    Raises:
        ConfigError: unknown or unsupported dataset.
        DataError: the file is missing, its MD5 differs from the official one, or it cannot be read.
    """
    info = dataset_info(name)
    file_name = official_file_name(info, size)
    path = resolve_data_root(data_root) / file_name
    if not path.is_file():
        raise DataError(f"dataset file {file_name!r} not found in the data root (set --data-root or {MEDMNIST_ROOT_ENV})",
                        local_detail=f"searched: {path.parent}", hint=FETCH_HINT)
    raw = read_medmnist(info, path, verify_md5, size=size, splits=("train", "test"))
    train, test = (validated(split, *raw[split], info, size=size) for split in ("train", "test"))
    return info, train, test


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
