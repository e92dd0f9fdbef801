"""Partitioning, site policy, the near-copy check, and loading real MedMNIST files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from harness.partition import partition
from shared.errors import ConfigError, DataError, PolicyError
from shared.methods import DCConfig, InitMode
from shared.schemas import PartitionScheme
from site_agent.medmnist_files import load_medmnist
from site_agent.policy import SitePolicy
from site_agent.privacy.near_copy import nearest_real_similarity
from tests.conftest import blobs, make_request


@pytest.mark.parametrize("scheme", list(PartitionScheme))
def test_partition_is_disjoint_complete_and_deterministic(scheme) -> None:
    """Every image goes to exactly one site, the same way for the same seed."""
    train, test = np.repeat([0, 1, 2], 100), np.repeat([0, 1, 2], 30)
    parts = partition(train, test, 4, scheme, alpha=0.3, seed=1)
    for split, labels in ((0, train), (1, test)):
        joined = np.concatenate([p[split] for p in parts])
        assert sorted(joined.tolist()) == list(range(len(labels)))
    again = partition(train, test, 4, scheme, alpha=0.3, seed=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(parts, again, strict=True))
    assert min(len(p[0]) for p in parts) >= 10


def test_partition_refuses_too_little_data() -> None:
    """Asking for more sites than the data can feed is a clear config error."""
    with pytest.raises(ConfigError, match="cannot give"):
        partition(np.zeros(20, int), np.zeros(5, int), 3, PartitionScheme.IID, 0.5, 0)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"ipc": 100}, "ipc 100 exceeds"), ({"iterations": 10**5}, "iterations"), ({"init": InitMode.REAL}, "init 'real'")],
)
def test_policy_refuses_what_exceeds_it(change, match) -> None:
    """The site's limits win over the coordinator's request."""
    request = make_request().model_copy(update={"distill": DCConfig(**change)})
    with pytest.raises(PolicyError, match=match):
        SitePolicy(max_ipc=50, max_iterations=1000).check(request)


def test_near_copy_detector_finds_shifted_copies_and_passes_noise() -> None:
    """A shifted copy of a real image scores near 1; random noise scores low."""
    real = torch.from_numpy(blobs(per_class=20, size=28).images)
    shifted_copy = torch.roll(real[:1], shifts=(2, -1), dims=(2, 3))
    assert nearest_real_similarity(shifted_copy, real) > 0.9
    assert nearest_real_similarity(torch.randn(5, 1, 28, 28), real) < 0.5


@pytest.mark.realdata
def test_medmnist_loads_through_the_package(data_root) -> None:
    """BreastMNIST loads via medmnist, normalised to [-1, 1] with the official split sizes."""
    info, train, test = load_medmnist("breastmnist", data_root)
    assert (len(train), len(test)) == (546, 156) and train.images.shape[1:] == (1, 28, 28)
    assert -1.0 <= train.images.min() and train.images.max() <= 1.0 and info.num_classes == 2


@pytest.mark.realdata
def test_md5_mismatch_is_reported(data_root, tmp_path) -> None:
    """A file whose bytes differ from the official release is refused with its MD5."""
    copy = tmp_path / "breastmnist.npz"
    shutil.copy(data_root / "breastmnist.npz", copy)
    with copy.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match="not the official"):
        load_medmnist("breastmnist", tmp_path)


def test_missing_file_is_a_clear_data_error(tmp_path) -> None:
    """No file, no download: a DataError that says where to point."""
    with pytest.raises(DataError, match="not found"):
        load_medmnist("pathmnist", tmp_path)
