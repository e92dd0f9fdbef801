"""Loading a site's local images, in one of three formats, into normalised arrays.

Formats (:class:`DataFormat`, told apart by :func:`detect_format`):

- ``medmnist``: an official MedMNIST file ``<flag>.npz``, read by the ``medmnist`` package's own loader
  (``root=``, ``download=False``) after its MD5 is checked. The path is the file or the folder holding it.
- ``npz``: any other ``.npz`` export with MedMNIST's keys: ``train_images``/``train_labels`` and,
  optionally, ``val_*`` and ``test_*``; images uint8 (N, H, W) or (N, H, W, C), labels (N,) or (N, 1).
- ``folder``: image files per class, ``<root>/<split>/<class>/*.png|jpg`` with split ``train``, ``val``
  or ``test`` (``train`` required); or ``<root>/<class>/*`` when every image is a training image. A
  class folder is named by its class index, optionally followed by ``_`` or ``-`` and a name
  (``0``, ``1_malignant``). Images are 8-bit grayscale or RGB, all with the same channels.

Exports and image folders may hold images of any size, even mixed: each image is centre-cropped to a
square and resized to ``IMAGE_SIZE`` (``site_agent.images``), and :class:`LocalData` and
:class:`SiteImages` carry what was done (``preprocessing``). An official MedMNIST file is read at its size.
Images come back normalised to float32 (N, C, H, W) in [-1, 1] (see ``shared.datasets.normalize``)
and labels as int64 (N,). Nothing in this module sends anything anywhere; its error messages name
splits, classes and counts but never a path (files are named only in ``LocalDataError.local_detail``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.datasets import IMAGE_SIZE, MEDMNIST_ROOT_ENV, DatasetInfo, dataset_info, normalize, resolve_data_root
from shared.errors import ConfigError, DataError, LocalDataError
from shared.manifest import Preprocessing
from site_agent.images import fit_image, fit_images, preprocessing_of

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS_OF_MODE = {"L": 1, "RGB": 3}
_CLASS_FOLDER = re.compile(r"^(\d+)(?:[_-].*)?$")


class DataFormat(StrEnum):
    """How a site's images are stored on disk."""

    MEDMNIST = "medmnist"
    NPZ = "npz"
    FOLDER = "folder"


@dataclass(frozen=True)
class LabelledImages:
    """Normalised images (N, C, H, W) float32 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class SiteImages:
    """What one site holds: a train part (distilled) and a test part (evaluation); never leaves the site."""

    info: DatasetInfo
    train: LabelledImages
    test: LabelledImages
    preprocessing: Preprocessing | None = None  # how the images were resized to IMAGE_SIZE; None: not at all


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


def dataset_of_file(path: str | os.PathLike[str]) -> str | None:
    """The MedMNIST flag an official file is named after (``.../breastmnist.npz`` -> ``breastmnist``), else None."""
    from medmnist import INFO

    file = Path(path)
    return file.stem if file.suffix == ".npz" and file.stem in INFO else None


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
        f"(check the data path or set {MEDMNIST_ROOT_ENV}; downloads are off)"
        + (f"; it holds {', '.join(found)}" if found else ""),
        local_detail=f"searched: {path}",
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
    source_sizes: set[tuple[int, int]] = set()  # (H, W) of the images as stored
    if fmt == DataFormat.MEDMNIST:
        if dataset and dataset.lower() != target.stem:
            raise ConfigError(f"dataset {dataset!r} was asked for, but the MedMNIST file is {target.name!r}")
        info = dataset_info(target.stem)
        raw = _read_medmnist(info, target, verify_md5)
    else:
        if not dataset:
            raise ConfigError(f"a {fmt.value} data path needs the dataset flag (e.g. --dataset breastmnist)")
        info = dataset_info(dataset)
        if fmt == DataFormat.NPZ:
            raw = _read_npz_export(target)
            source_sizes = {images.shape[1:3] for images, _ in raw.values() if images.ndim in (3, 4) and len(images)}
        else:
            raw, source_sizes = _read_image_folder(target)
    splits = {split: _validated(split, images, labels, info, fit=fmt != DataFormat.MEDMNIST)
              for split, (images, labels) in raw.items()}
    return LocalData(fmt, info, splits, preprocessing_of(source_sizes))


def load_medmnist(
    name: str, data_root: str | os.PathLike[str] | None, size: int = 28, verify_md5: bool = True
) -> tuple[DatasetInfo, LabelledImages, LabelledImages]:
    """Load the train and test splits of a MedMNIST 2D dataset without downloading.

    Raises:
        ConfigError: unknown or unsupported dataset.
        DataError: the file is missing, its MD5 differs from the official one, or it cannot be read.
    """
    info = dataset_info(name)
    file_name = f"{info.name}{'' if size == 28 else f'_{size}'}.npz"
    path = resolve_data_root(data_root) / file_name
    if not path.is_file():
        raise DataError(
            f"dataset file {file_name!r} not found in the data root "
            f"(set --data-root or {MEDMNIST_ROOT_ENV}; downloads are off)", local_detail=f"searched: {path.parent}"
        )
    raw = _read_medmnist(info, path, verify_md5, size=size, splits=("train", "test"))
    train, test = (_validated(split, *raw[split], info, size=size) for split in ("train", "test"))
    return info, train, test


def load_site_images(dataset: str, data_root: str, verify_md5: bool = True) -> SiteImages:
    """The site's images: all it holds at ``data_root`` (any format).

    A site without a test split can distill but not evaluate (its test part is empty).
    """
    local = read_local_data(data_root, dataset, verify_md5)
    train = local.splits["train"]
    test = local.splits.get("test") or LabelledImages(train.images[:0], train.labels[:0])
    return SiteImages(local.info, train, test, local.preprocessing)


# --- the three readers: each returns {split: (uint8 images (N, H, W[, C]), raw labels)} ---


def _read_medmnist(
    info: DatasetInfo, path: Path, verify_md5: bool, size: int = 28, splits: tuple[str, ...] = SPLITS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import medmnist

    if verify_md5 and size in info.md5:
        digest = _md5(path)
        if digest != info.md5[size]:
            raise DataError(
                f"dataset file {path.name!r} has MD5 {digest}, not the official {info.md5[size]}",
                hint="the file is corrupt or not the official release; re-fetch it, or turn MD5 checks off "
                "for a local export (--no-verify-md5)",
            )
    dataset_class = getattr(medmnist, medmnist.INFO[info.name]["python_class"])
    raw = {}
    for split in splits:
        try:
            ds = dataset_class(split=split, root=str(path.parent), download=False, size=size)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"dataset file {path.name!r} cannot be read as MedMNIST ({type(exc).__name__})") from exc
        raw[split] = (np.asarray(ds.imgs), np.asarray(ds.labels))
    return raw


def _read_npz_export(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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


def class_folder_name_notes(root: Path, label_names: dict[int, str]) -> list[str]:
    """Notes on class folders whose name disagrees with the dataset's name for their index (site-local text).

    ``1_malignant`` is read as class 1 whatever its name says; when the name is another class's name, the
    folders are probably numbered the wrong way round.
    """
    def plain(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    def forms(name: str) -> set[str]:  # "normal, benign" is also called "benign" or "normal"
        return {plain(name)} | {word for word in re.split(r"[^a-z0-9]+", name.lower()) if len(word) >= 3}

    names = {form: index for index, name in label_names.items() for form in forms(name)}
    notes = []
    for split, class_dir in ((split, entry) for split, entries in _class_folders(root) for entry in entries):
        index = _class_index(class_dir, split)
        name = class_dir.name.lstrip("0123456789")[1:]  # after "<index>_" or "<index>-"
        if not name or index not in label_names or plain(name) in forms(label_names[index]):
            continue
        other = names.get(plain(name))
        said = (f"which is class {other}'s name: are the folders numbered the wrong way round?" if other is not None
                else "which is not that class's name")
        notes.append(f"folder {class_dir.relative_to(root)} is read as class {index} ({label_names[index]}) by its "
                     f"number, but is named {name!r}, {said}")
    return notes


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """Each split of an image-folder layout with its entries (class folders, if valid), in reading order.

    Raises:
        DataError: split folders mixed with others, or split folders without ``train``.
    """
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_folders = [p for p in folders if p.name in SPLITS]
    if split_folders and len(split_folders) != len(folders):
        others = sorted(p.name for p in folders if p.name not in SPLITS)
        raise LocalDataError(f"the image folder mixes split folders with {len(others)} other folder(s); use one layout",
                             local_detail=f"other folders: {others}")
    if not split_folders:
        split_folders = [root]  # <root>/<class>/*: all training images
    elif "train" not in {p.name for p in split_folders}:
        raise DataError("the image folder has split folders but no 'train' folder")
    return [("train" if folder == root else folder.name, sorted(p for p in folder.iterdir() if not p.name.startswith(".")))
            for folder in split_folders]


def _read_image_folder(root: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], set[tuple[int, int]]]:
    """The folder's splits, each image resized to IMAGE_SIZE as it is read; and the (H, W) sizes the images had."""
    files: list[Path] = []
    raw_labels: dict[str, list[int]] = {}
    split_files: dict[str, list[Path]] = {}
    for split, class_dirs in _class_folders(root):
        split_files[split], raw_labels[split] = [], []
        for class_dir in class_dirs:
            label = _class_index(class_dir, split)
            for file in sorted(p for p in class_dir.iterdir() if not p.name.startswith(".")):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    raise LocalDataError(
                        f"split {split!r} class folder {class_dir.name!r} holds a file that is not a .png/.jpg image",
                        local_detail=f"not an image file: {file}",
                    )
                split_files[split].append(file)
                raw_labels[split].append(label)
        files += split_files[split]
    images, source_sizes = _read_images(files)
    pixels = dict(zip(files, images, strict=True))
    _same_channels(pixels)
    return {
        split: (np.stack([pixels[f] for f in split_files[split]]) if split_files[split] else np.zeros((0, 1, 1), np.uint8),
                np.asarray(raw_labels[split], dtype=np.int64))
        for split in split_files
    }, source_sizes


def _class_index(class_dir: Path, split: str) -> int:
    match = _CLASS_FOLDER.match(class_dir.name)
    if not class_dir.is_dir() or match is None:
        raise LocalDataError(  # a folder name may be a patient's name or record number: kept local
            f"split {split!r} holds an entry that is not a class folder named by its index (e.g. '0' or '1_malignant')",
            local_detail=f"not a class folder: {class_dir.name!r}",
        )
    return int(match.group(1))


def _read_images(files: list[Path]) -> tuple[list[np.ndarray], set[tuple[int, int]]]:
    """Each file's pixels resized to IMAGE_SIZE, uint8 (S, S) grayscale or (S, S, 3) RGB; and the (H, W) sizes read."""
    arrays, source_sizes = [], set()
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                mode, pixels = image.mode, np.asarray(image)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise LocalDataError(
                f"an image file cannot be read ({type(exc).__name__})", local_detail=f"unreadable image: {file}"
            ) from exc
        if mode not in _CHANNELS_OF_MODE:
            raise LocalDataError(
                f"an image has mode {mode!r}; only 8-bit grayscale ('L') or RGB images are read",
                local_detail=f"unsupported image mode {mode!r}: {file}",
                hint="export the images as 8-bit grayscale or RGB PNG",
            )
        source_sizes.add(pixels.shape[:2])
        arrays.append(fit_image(pixels))
    return arrays, source_sizes


def _same_channels(pixels: dict[Path, np.ndarray]) -> None:
    """Refuse a folder that mixes grayscale and RGB images, naming an example of each kind."""
    kinds = {file: "grayscale" if a.ndim == 2 else "RGB" for file, a in pixels.items()}
    if len(set(kinds.values())) > 1:
        example = {kind: file for file, kind in reversed(kinds.items())}  # the first file of each kind
        counts = ", ".join(f"{kind} ({count} images)" for kind, count in Counter(kinds.values()).most_common())
        raise LocalDataError(
            f"images differ in channels: {counts}",
            local_detail="\n".join(f"{kind}: e.g. {file}" for kind, file in example.items()),
            hint="export every image with the same channel count (all grayscale or all RGB)",
        )


# --- checks common to every format ---


def _validated(
    split: str, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, size: int = IMAGE_SIZE, fit: bool = False
) -> LabelledImages:
    """Check one split's raw arrays against the dataset and normalise them; ``fit`` resizes them to ``size``.

    Raises:
        DataError: naming the split and the first thing wrong with it.
    """
    if len(images) == 0:
        raise DataError(f"split {split!r} holds no images")
    if images.dtype != np.uint8:
        raise DataError(f"split {split!r} images are {images.dtype}, expected uint8 pixels 0..255")
    if images.ndim not in (3, 4) or 0 in images.shape[1:3]:
        raise DataError(f"split {split!r} images have shape {images.shape}, expected (N, H, W) or (N, H, W, C) "
                        "with H and W at least 1")
    channels = 1 if images.ndim == 3 else images.shape[3]
    if channels != info.in_channels:
        raise DataError(f"split {split!r} images have {channels} channel(s); {info.name} has {info.in_channels}")
    if images.ndim == 4 and channels == 1:
        images = images[..., 0]  # (N, H, W)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"split {split!r} labels are {labels.dtype}, expected integer class indices")
    if labels.shape not in ((len(images),), (len(images), 1)):
        raise DataError(f"split {split!r} has {len(images)} images but labels of shape {labels.shape}")
    labels = labels.reshape(-1).astype(np.int64)
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise DataError(f"split {split!r} has labels outside 0..{info.num_classes - 1} ({info.name})")
    if fit:
        images = fit_images(images, size)  # (N, size, size[, C])
    elif images.shape[1:3] != (size, size):  # a MedMNIST file holds the size it is named for
        raise DataError(f"split {split!r} images are {images.shape[2]}x{images.shape[1]}, not {size}x{size}")
    return LabelledImages(normalize(images), labels)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
