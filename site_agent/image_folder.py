"""A hospital's images as files in class folders, each image resized to the federation's size as it is read.

Layout: ``<root>/<split>/<class>/*.png|jpg`` with split ``train``, ``val`` or ``test`` (``train``
required); or ``<root>/<class>/*`` when every image is a training image. A class folder is named by its
class index, optionally followed by ``_`` or ``-`` and a name (``0``, ``1_malignant``). Images are 8-bit
grayscale or RGB, all with the same channels, at any size (``site_agent.images``). Folder and file names
may be patients' names or record numbers, so errors keep them in ``LocalDataError.local_detail``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import DataError, LocalDataError
from shared.manifest import Preprocessing
from site_agent.images import fit_image, preprocessing_of
from site_agent.labelled import SPLITS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS_OF_MODE = {"L": 1, "RGB": 3}
_CLASS_FOLDER = re.compile(r"^(\d+)(?:[_-].*)?$")


def read_image_folder(root: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Preprocessing | None]:
    """The folder's splits, ``{split: (uint8 images (N, S, S[, 3]), labels (N,))}`` with each image resized to
    IMAGE_SIZE as it is read; and what that resize was (None: every image was that size already).

    Raises:
        DataError: a bad layout, a file that is not a readable 8-bit grayscale or RGB image, mixed channels.
    """
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
    }, preprocessing_of(source_sizes)


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
