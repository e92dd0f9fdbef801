"""What the project knows about MedMNIST 2D datasets, and the one pixel normalisation both sides use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ConfigError

# MedMNIST tasks a synthetic set can represent: one label per image.
SUPPORTED_TASKS = ("binary-class", "multi-class", "ordinal-regression")
# Sites load and release MedMNIST at its 28x28 size.
IMAGE_SIZE = 28
MEDMNIST_ROOT_ENV = "MEDMNIST_ROOT"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """``data_root`` if given, else ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (medmnist's default).

    It may name a MedMNIST folder, one ``.npz`` file (official or a hospital's export) or an image folder.
    """
    chosen = str(data_root) if data_root else os.environ.get(MEDMNIST_ROOT_ENV) or "~/.medmnist"
    return Path(chosen).expanduser()


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one MedMNIST dataset (from ``medmnist.INFO``)."""

    name: str
    task: str
    in_channels: int
    num_classes: int
    label_names: dict[int, str]
    md5: dict[int, str]  # image size -> MD5 of the official .npz


def dataset_info(name: str) -> DatasetInfo:
    """Look up a MedMNIST 2D dataset by flag (e.g. ``"breastmnist"``).

    Raises:
        ConfigError: unknown dataset, a 3D dataset, or a task the project does not support.
    """
    from medmnist import INFO  # medmnist pulls in torchvision; import it only when needed

    flag = name.lower()
    if flag not in INFO:
        known = ", ".join(sorted(k for k in INFO if not k.endswith("3d")))
        raise ConfigError(f"dataset {name!r} is not a MedMNIST dataset; known 2D datasets: {known}")
    info = INFO[flag]
    if flag.endswith("3d"):
        raise ConfigError(f"dataset {name!r} is 3D; only MedMNIST 2D datasets are supported")
    if info["task"] not in SUPPORTED_TASKS:
        raise ConfigError(
            f"dataset {name!r} has task {info['task']!r}; synthetic sets hold one label per image, "
            "so multi-label datasets such as ChestMNIST are not supported yet"
        )
    md5 = {28: info["MD5"]}
    for size in (64, 128, 224):
        if f"MD5_{size}" in info:
            md5[size] = info[f"MD5_{size}"]
    return DatasetInfo(
        name=flag,
        task=info["task"],
        in_channels=int(info["n_channels"]),
        num_classes=len(info["label"]),
        label_names={int(k): v for k, v in info["label"].items()},
        md5=md5,
    )


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1].

    A fixed transform (not dataset statistics) so that no site has to share its pixel statistics
    and every site's synthetic images live in the same space.
    """
    x = images_uint8.astype(np.float32) / 127.5 - 1.0
    if x.ndim == 3:
        return x[:, None, :, :]  # (N, 1, H, W)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)


def denormalize(images: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in about [-1, 1] -> uint8 (N, H, W, C) for display."""
    x = np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def reference_subset(labels: np.ndarray, class_counts: list[int], seed: int) -> np.ndarray:
    """Random real indices with ``class_counts[c]`` images of class ``c`` (all of a smaller class)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size=min(n, int((labels == c).sum())), replace=False)
             for c, n in enumerate(class_counts) if n]
    return np.concatenate(picks)
