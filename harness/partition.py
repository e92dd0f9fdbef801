"""Splitting one dataset across simulated sites, the way hospitals differ: by label mix.

With ``dirichlet``, each class's images are shared out in proportions drawn from Dir(alpha); small
alpha gives very different label mixes per site. The *same* proportions split the test split, so a
site's test images follow its own label mix, and the test split stays at the sites too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from shared.errors import ConfigError
from shared.schemas import PartitionScheme

_MAX_TRIES = 1000


def partition(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_sites: int,
    scheme: PartitionScheme,
    alpha: float,
    seed: int,
    min_train_per_site: int = 10,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disjoint (train indices, test indices) for each site; deterministic for a given seed.

    Raises:
        ConfigError: there are too few images to give every site ``min_train_per_site``.
    """
    if num_sites < 1:
        raise ConfigError(f"number of sites must be at least 1, got {num_sites}")
    if len(train_labels) < num_sites * min_train_per_site:
        raise ConfigError(
            f"{len(train_labels)} training images cannot give {num_sites} sites {min_train_per_site} each"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(np.concatenate([train_labels, test_labels]))
    for _ in range(_MAX_TRIES):
        if scheme == PartitionScheme.IID:
            proportions = np.full((len(classes), num_sites), 1.0 / num_sites)
        else:
            proportions = rng.dirichlet(np.full(num_sites, alpha), size=len(classes))  # (classes, sites)
        train_parts = _split_by_class(train_labels, classes, proportions, rng)
        if min(len(part) for part in train_parts) >= min_train_per_site:
            test_parts = _split_by_class(test_labels, classes, proportions, rng)
            return list(zip(train_parts, test_parts, strict=True))
    raise ConfigError(
        f"could not draw a {scheme.value} partition with alpha={alpha} that gives every one of "
        f"{num_sites} sites {min_train_per_site} training images; raise alpha or use fewer sites"
    )


def _split_by_class(
    labels: np.ndarray, classes: np.ndarray, proportions: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    num_sites = proportions.shape[1]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for row, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(proportions[row])[:-1] * len(idx)).round().astype(int)
        for site, chunk in enumerate(np.split(idx, cuts)):
            parts[site].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def share_digest(train_indices: np.ndarray, test_indices: np.ndarray) -> str:
    """SHA-256 of a share's train and test index sets: two runs with equal digests used the same images."""
    digest = hashlib.sha256()
    for indices in (train_indices, test_indices):
        digest.update(np.sort(np.asarray(indices, np.int64)).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def record_share(folder: Path, site_id: str, digest: str) -> None:
    """Simulation only: note which share a simulated site loaded, so a study can check its arms used one partition."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{site_id}.json").write_text(json.dumps({"site": site_id, "share_sha256": digest}) + "\n")


def recorded_shares(folder: Path) -> dict[str, str]:
    """Site id -> share digest, as the simulated sites of one run recorded them."""
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    return {r["site"]: r["share_sha256"] for r in records}
