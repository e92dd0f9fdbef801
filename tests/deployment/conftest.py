"""Deployment fixtures: a site's complete key directory, and ``processes`` (stopped afterwards, descendants included)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from coordinator.tls import issue_tls
from shared import crypto
from shared.keys import COORDINATOR_PUB, SITE_CA_CERT, create_coordinator_key, create_site_identity
from site_agent import join
from tests.deployment.live import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


@pytest.fixture
def site(tmp_path: Path) -> join.JoinSettings:
    """A complete site key directory (keys, pinned coordinator key, study CA) and settings for it."""
    coord = tmp_path / "coord"
    public = create_coordinator_key(coord)
    files = issue_tls(coord, [])
    key_dir = tmp_path / "hospital's keys"  # a quote and a space: the node config file must carry them exactly
    create_site_identity(key_dir)
    crypto.save_public_key(public, key_dir / COORDINATOR_PUB)
    shutil.copyfile(files.ca_cert, key_dir / SITE_CA_CERT)
    return join.JoinSettings(site_id="st-marys", key_dir=key_dir, superlink="link.example.org:443",
                             data=export(tmp_path / "data" / "export.npz"), dataset="breastmnist", port=9611, threads=2,
                             cache_dir=tmp_path / "cache")


def export(path: Path, per_class: tuple[int, int] = (12, 12)) -> Path:
    """A hospital's .npz export of 28x28 grey images, ``per_class`` training images of each class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(len(per_class)), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=labels)
    return path
