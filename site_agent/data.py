"""Loading a site's local images: MedMNIST through the ``medmnist`` package's own loader.

Images come back normalised to float32 (N, C, H, W) in [-1, 1] (see ``shared.datasets.normalize``)
and labels as int64 (N,). Nothing in this module sends anything anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.datasets import DatasetInfo, dataset_info, normalize
from shared.errors import DataError
from site_agent.partition import partition as partition_indices
from site_agent.settings import PartitionSpec

log = logging.getLogger(__name__)

MEDMNIST_ROOT_ENV = "MEDMNIST_ROOT"


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


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """``data_root`` if given, else ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (medmnist's default)."""
    chosen = str(data_root) if data_root else os.environ.get(MEDMNIST_ROOT_ENV) or "~/.medmnist"
    return Path(chosen).expanduser()


def load_medmnist(
    name: str, data_root: str | os.PathLike[str] | None, size: int = 28, verify_md5: bool = True
) -> tuple[DatasetInfo, LabelledImages, LabelledImages]:
    """Load the train and test splits of a MedMNIST 2D dataset without downloading.

    Raises:
        ConfigError: unknown or unsupported dataset.
        DataError: the file is missing, its MD5 differs from the official one, or it cannot be read.
    """
    import medmnist

    info = dataset_info(name)
    root = resolve_data_root(data_root)
    file_name = f"{info.name}{'' if size == 28 else f'_{size}'}.npz"
    path = root / file_name
    if not path.is_file():
        raise DataError(
            f"dataset file {file_name!r} not found in the data root "
            f"(set --data-root or {MEDMNIST_ROOT_ENV}; downloads are off)"
        )
    if verify_md5 and size in info.md5:
        digest = _md5(path)
        if digest != info.md5[size]:
            raise DataError(
                f"dataset file {file_name!r} has MD5 {digest}, not the official {info.md5[size]}",
                hint="the file is corrupt or not the official release; re-fetch it, or turn MD5 checks off "
                "for a local export (--no-verify-md5)",
            )
    dataset_class = getattr(medmnist, medmnist.INFO[info.name]["python_class"])
    splits = []
    for split in ("train", "test"):
        try:
            ds = dataset_class(split=split, root=str(root), download=False, size=size)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"dataset file {file_name!r} cannot be read as MedMNIST ({type(exc).__name__})") from exc
        labels = np.asarray(ds.labels).reshape(-1).astype(np.int64)
        if labels.size != len(ds.imgs) or labels.min() < 0 or labels.max() >= info.num_classes:
            raise DataError(f"dataset file {file_name!r} split {split!r} has labels outside 0..{info.num_classes - 1}")
        splits.append(LabelledImages(normalize(np.asarray(ds.imgs)), labels))
    return info, splits[0], splits[1]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_site_images(dataset: str, data_root: str, partition: PartitionSpec | None, verify_md5: bool = True) -> SiteImages:
    """The site's images: the whole dataset, or its share of it when ``partition`` is given."""
    info, train, test = load_medmnist(dataset, data_root, verify_md5=verify_md5)
    if partition is not None:
        parts = partition_indices(
            train.labels, test.labels, partition.count, partition.scheme, partition.alpha, partition.seed
        )
        train_idx, test_idx = parts[partition.index]
        train, test = train.subset(train_idx), test.subset(test_idx)
    return SiteImages(info, train, test)
