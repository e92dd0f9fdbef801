"""Shared fixtures: tiny generated data and keys, and the real MedMNIST folder when it is present."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.trust import create_simulation_keys, load_coordinator_keys
from shared.bundle import MAGIC, BundleHeader, SealedBundle, open_bundle
from shared.datasets import dataset_info
from shared.methods import DCConfig, SoftLabelSpec
from shared.schemas import DistillRequest, TrainingSpec
from site_agent.distill import SyntheticSet
from site_agent.identity import load_site_identity
from site_agent.labelled import LabelledImages
from site_agent.peers import pin_peer_key
from site_agent.policy import SitePolicy
from site_agent.release import seal_described
from site_agent.settings import SiteSettings

REAL_DATA = Path(os.environ.get("MEDMNIST_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flower: runs Flower's Simulation Engine (Ray); tens of seconds")
    config.addinivalue_line("markers", "realdata: needs the MedMNIST files in ../shared/data/medmnist")
    config.addinivalue_line("markers", "live: real multi-process deployments and a browser (minutes); the default "
                                       "run leaves them out, `python -m pytest -m live` runs them")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def data_root() -> Path:
    if not (REAL_DATA / "breastmnist.npz").is_file():
        pytest.skip(f"real MedMNIST files not found in {REAL_DATA} (set MEDMNIST_ROOT)")
    return REAL_DATA


def blobs(num_classes: int = 2, per_class: int = 40, channels: int = 1, size: int = 16, seed: int = 0) -> LabelledImages:
    """Well-separated generated classes: each class is a fixed random pattern plus noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(-0.8, 0.8, size=(num_classes, channels, size, size))
    labels = np.repeat(np.arange(num_classes), per_class)
    images = patterns[labels] + rng.normal(0, 0.15, size=(len(labels), channels, size, size))
    return LabelledImages(np.clip(images, -1, 1).astype(np.float32), labels.astype(np.int64))


@pytest.fixture
def keys(tmp_path: Path):
    """Coordinator keys and two sites' identities, as a simulation would make them."""
    coordinator_dir = create_simulation_keys(tmp_path / "keys", ["site-0", "site-1"])
    coordinator = load_coordinator_keys(coordinator_dir)
    sites = {s: load_site_identity(s, tmp_path / "keys" / s) for s in ("site-0", "site-1")}
    return coordinator, sites


def make_request(run_id: str = "run-1", nonce: str = "ab" * 32, ipc: int = 2) -> DistillRequest:
    return DistillRequest(run_id=run_id, nonce=nonce, dataset="breastmnist", distill=DCConfig(ipc=ipc, iterations=1))


def make_synthetic(request: DistillRequest, images: np.ndarray | None = None, labels: list[int] | None = None) -> SyntheticSet:
    """A hand-made synthetic set for BreastMNIST shapes (1, 28, 28), 2 classes."""
    labels = labels if labels is not None else [0, 0, 1, 1]
    if images is None:
        images = np.random.default_rng(0).normal(size=(len(labels), 1, 28, 28)).astype(np.float32)
    return SyntheticSet(
        torch.from_numpy(images), torch.tensor(labels), sorted(set(labels)), request.distill, [1.0], 0.1
    )


def edit_header(sealed: bytes, **changes) -> bytes:
    """A tampered bundle: ``sealed`` with fields of its clear header changed, its ciphertext kept."""
    bundle = SealedBundle.from_bytes(sealed)
    header = BundleHeader(**{**bundle.header.model_dump(), **changes}).model_dump_json().encode()
    return MAGIC + len(header).to_bytes(4, "big") + header + bundle.ciphertext


def deployed_site(tmp_path: Path, policy: SitePolicy, test_labels: list[int] | None = None) -> SiteSettings:
    """A deployed-style site 'site-0' (keys from the ``keys`` fixture) on a small generated BreastMNIST-shaped
    export: 12 training images per class, each class a smooth random pattern plus noise, and ``test_labels``
    (default 4 of each class) test images drawn the same way."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 12)
    images = np.clip(rng.integers(40, 215, (2, 28, 28))[labels] + rng.normal(0, 20, (24, 28, 28)), 0, 255)
    test_labels = np.asarray(test_labels if test_labels is not None else [0] * 4 + [1] * 4)
    test = np.clip(rng.integers(40, 215, (2, 28, 28))[test_labels] + rng.normal(0, 20, (len(test_labels), 28, 28)),
                   0, 255)
    np.savez(tmp_path / "export.npz", train_images=images.astype(np.uint8), train_labels=labels,
             test_images=test.astype(np.uint8), test_labels=test_labels)
    return SiteSettings(site_id="site-0", key_dir=tmp_path / "keys" / "site-0", data_root=str(tmp_path / "export.npz"),
                        policy=policy, device="cpu", verify_md5=True, cache_dir=tmp_path / "cache")


# A small global-model training for scoring requests: the site trains the model it scores itself.
QUICK_TRAINING = TrainingSpec(epochs=2, lr=0.01, batch_size=256, augment=False, seed=0)


def signed_pool(keys, tmp_path: Path, run_id: str = "run-1", sites: tuple[str, ...] = ("site-0", "site-1"),
                pin: bool = True, soft: tuple[str, ...] = ()) -> list[bytes]:
    """The pooled sets of a scoring request as the coordinator forwards them: hand-made sets of ``sites``, sealed
    by each site, opened by the coordinator and passed on. ``pin`` pins the other sites at site-0 (the
    ``deployed_site``), as its operator would; the sets of the sites in ``soft`` carry soft labels."""
    coordinator, identities = keys
    info = dataset_info("breastmnist")
    pool = []
    for index, site in enumerate(sites):
        if pin and site != "site-0":
            pin_peer_key(tmp_path / "keys" / "site-0", site, identities[site].signing_key.public_key())
        request = make_request(run_id, nonce=f"{index + 1:02x}" * 32)
        synthetic = make_synthetic(request)
        if site in soft:
            labels = torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.2, 0.8], [0.45, 0.55]])
            synthetic = dataclasses.replace(synthetic, soft_labels=labels, label_spec=SoftLabelSpec())
        sealed = seal_described(synthetic, request, identities[site], info, num_real_examples=24,
                                real_class_counts={0: 12, 1: 12}, real_test_class_counts={0: 4, 1: 4}).sealed
        opened = open_bundle(sealed, coordinator.private_key, coordinator.verify_key_for, 1 << 24)
        pool.append(opened.forwarded(coordinator.verify_key_for(site)).to_bytes())
    return pool
