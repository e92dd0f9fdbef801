"""Loading a site's local images, in one of three formats, into normalised arrays: ``load_site_images``.

Formats (:class:`DataFormat`, told apart by :func:`detect_format`), one reader module each:

- ``medmnist``: an official MedMNIST file ``<flag>.npz``, read by the ``medmnist`` package's own loader
  after its MD5 is checked (``site_agent.medmnist_files``). The path is the file or the folder holding it.
- ``npz``: any other ``.npz`` export with MedMNIST's keys (``site_agent.npz_export``).
- ``folder``: image files in class folders, optionally in split folders (``site_agent.image_folder``).

Exports and image folders may hold images of any size, even mixed: each image is centre-cropped to a
square and resized to ``IMAGE_SIZE`` (``site_agent.images``), and :class:`LocalData` and
:class:`SiteImages` carry what was done (``preprocessing``). An official MedMNIST file is read at its size.
Every split ends as :class:`site_agent.labelled.LabelledImages`: float32 (N, C, H, W) in [-1, 1] and
int64 labels (N,). Nothing in this module sends anything anywhere; its error messages name splits,
classes and counts but never a path (files are named only in ``LocalDataError.local_detail``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from shared.datasets import MEDMNIST_ROOT_ENV, DatasetInfo, dataset_info, resolve_data_root
from shared.errors import ConfigError, DataError
from shared.manifest import Preprocessing
from site_agent.image_folder import read_image_folder
from site_agent.labelled import LabelledImages, SiteImages, validated
from site_agent.medmnist_files import FETCH_HINT, read_medmnist
from site_agent.npz_export import read_npz_export


class DataFormat(StrEnum):
    """How a site's images are stored on disk."""

    MEDMNIST = "medmnist"
    NPZ = "npz"
    FOLDER = "folder"


@dataclass(frozen=True)
class LocalData:
    """Every split found at a data path (``train`` always, ``val``/``test`` when present), validated."""

    format: DataFormat
    info: DatasetInfo
    splits: dict[str, LabelledImages]
    preprocessing: Preprocessing | None = None  # how the images were resized to IMAGE_SIZE; None: not at all

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])  # (C, H, W)


def detect_format(path: Path, dataset: str | None) -> tuple[DataFormat, Path]:
    """Which format ``path`` holds, and the file or folder to read.

    A folder holding ``<dataset>.npz`` is a MedMNIST root; a ``.npz`` file named after a MedMNIST
    dataset is an official file; any other ``.npz`` is an export; a folder of folders and no ``.npz``
    files is an image folder.

    Raises:
        DataError: nothing readable at ``path``.
    """
    from medmnist import INFO

    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"data file has suffix {path.suffix!r}; expected a .npz file or a folder of images")
        return (DataFormat.MEDMNIST if path.stem in INFO else DataFormat.NPZ), path
    if not path.is_dir():
        raise DataError("the data path does not exist", local_detail=f"searched: {path}",
                        hint=f"check the data path: site-agent's --data, a node config's data-root, coordinator "
                        f"simulate's --data-root, or {MEDMNIST_ROOT_ENV}")
    if dataset and (path / f"{dataset.lower()}.npz").is_file():
        return DataFormat.MEDMNIST, path / f"{dataset.lower()}.npz"
    holds_npz = any(path.glob("*.npz"))  # a MedMNIST root, just not with this dataset's file
    if not holds_npz and any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir()):
        return DataFormat.FOLDER, path
    found = sorted(p.stem for p in path.glob("*.npz") if p.stem in INFO)
    if not dataset and found:  # a MedMNIST root: which of its datasets is meant?
        raise DataError(f"the data folder holds the official files of {', '.join(found)}; say which one with "
                        "--dataset (or point --data at one .npz file)")
    wanted = f"{dataset.lower()}.npz" if dataset else "a .npz file"
    raise DataError(
        f"dataset file {wanted!r} not found in the data root, nor a folder of class images "
        f"(check the data path or set {MEDMNIST_ROOT_ENV})" + (f"; it holds {', '.join(found)}" if found else ""),
        local_detail=f"searched: {path}", hint=f"{DataError.hint}. {FETCH_HINT}",
    )


def check_data_path(path: Path) -> None:
    """Refuse a data path that no dataset could be read from: the check a site can make before a request names one.

    A folder holding ``.npz`` files is a MedMNIST root (the request's dataset picks the file); anything
    else must be what :func:`detect_format` reads without a dataset: a ``.npz`` file or a folder of
    class images.

    Raises:
        DataError: nothing at ``path``, a file that is not ``.npz``, or a folder with neither.
    """
    if path.is_dir() and any(path.glob("*.npz")):
        return
    detect_format(path, None)


def read_local_data(
    path: str | os.PathLike[str] | None, dataset: str | None = None, verify_md5: bool = True
) -> LocalData:
    """Read and validate every split at ``path`` in whichever format it holds.

    ``dataset`` (a MedMNIST flag) fixes the classes and channels; it may be left out only for an
    official MedMNIST file, whose name gives it. An export's or image folder's images of another size
    are resized to ``IMAGE_SIZE`` (``site_agent.images``); ``LocalData.preprocessing`` says how.

    Raises:
        ConfigError: no or an unknown dataset, or one that disagrees with an official file's name.
        DataError: the data is missing, unreadable, of the wrong shape or channel count, has labels
            out of range or an empty split (``LocalDataError`` when a file is to blame).
    """
    fmt, target = detect_format(resolve_data_root(path), dataset)
    preprocessing: Preprocessing | None = None  # an official file is read at its size
    if fmt == DataFormat.MEDMNIST:
        if dataset and dataset.lower() != target.stem:
            raise ConfigError(f"dataset {dataset!r} was asked for, but the MedMNIST file is {target.name!r}")
        info = dataset_info(target.stem)
        raw = read_medmnist(info, target, verify_md5)
    else:
        if not dataset:
            raise ConfigError(f"a {fmt.value} data path needs the dataset flag (e.g. --dataset breastmnist)")
        info = dataset_info(dataset)
        reader = read_npz_export if fmt == DataFormat.NPZ else read_image_folder
        raw, preprocessing = reader(target)
    splits = {split: validated(split, images, labels, info, fit=fmt != DataFormat.MEDMNIST)
              for split, (images, labels) in raw.items()}
    return LocalData(fmt, info, splits, preprocessing)


def load_site_images(dataset: str, data_root: str, verify_md5: bool = True) -> SiteImages:
    """The site's images: all it holds at ``data_root`` (any format).

    A site without a test split can distill but not evaluate (its test part is empty).
    """
    local = read_local_data(data_root, dataset, verify_md5)
    train = local.splits["train"]
    test = local.splits.get("test") or LabelledImages(train.images[:0], train.labels[:0])
    return SiteImages(local.info, train, test, local.preprocessing)
