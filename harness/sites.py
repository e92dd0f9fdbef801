"""The simulated hospitals: each site's share of one dataset, written as the export a hospital gives its site agent.

A simulated site runs the real ClientApp with the settings a deployed site would have (its keys, its
cache, a policy), and reads its images from its own ``.npz`` export exactly as a hospital's site reads
``--data``: the site agent has no simulation branch. The shares are written before the run starts, in
each simulated site's cache (``<out-dir>/.site-cache/<site>/data/``, never in the results folder), and
removed when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.partition import partition, share_digest
from harness.source import read_source
from shared import crypto
from shared.config import RunConfig, simulated_site_id
from shared.datasets import denormalize
from shared.fields import setting_error
from shared.keys import SIGNING_PUB, SIMULATION_KEYS
from shared.schemas import PartitionScheme
from site_agent.labelled import LabelledImages, SiteImages
from site_agent.npz_export import PREPROCESSING_KEY
from site_agent.peers import load_peers, pin_peer_key
from site_agent.policy import SitePolicy
from site_agent.settings import SiteSettings

if TYPE_CHECKING:  # Flower is imported once the simulation has set its environment (harness.simulate)
    from flwr.app import Context
    from flwr.clientapp import ClientApp


@dataclass(frozen=True)
class Share:
    """One simulated site's images, and the digest of which of the dataset's images they are."""

    site_id: str
    images: SiteImages
    sha256: str  # two runs whose shares have equal digests trained and tested on the same images


class SimulatedNode(BaseModel):
    """The node config Flower's Simulation Engine gives each node: its index, and how many there are."""

    model_config = ConfigDict(frozen=True, alias_generator=lambda name: name.replace("_", "-"))

    partition_id: int = Field(ge=0)
    num_partitions: int = Field(ge=1)


def split_shares(dataset: str, data_root: str, sites: int, scheme: PartitionScheme, alpha: float,
                 seed: int) -> list[Share]:
    """Every site's share of the data at ``data_root`` (``harness.partition``); deterministic for a seed.

    Raises:
        ConfigError, DataError: the data cannot be read, or cannot give every site enough images.
    """
    local = read_source(dataset, data_root)
    train = local.splits["train"]
    test = local.splits.get("test") or LabelledImages(train.images[:0], train.labels[:0])
    parts = partition(train.labels, test.labels, sites, scheme, alpha, seed)
    return [Share(simulated_site_id(i), SiteImages(local.info, train.subset(tr), test.subset(te), local.preprocessing),
                  share_digest(tr, te)) for i, (tr, te) in enumerate(parts)]


def run_shares(config: RunConfig) -> list[Share]:
    """The shares of a run's sites, split as its settings say."""
    return split_shares(config.dataset, config.data_root, config.sites, config.partition, config.alpha, config.seed)


def write_export(images: SiteImages, path: Path) -> Path:
    """Write a site's images as a hospital's ``.npz`` export (uint8 pixels, MedMNIST's keys); returns ``path``.

    Images resized when the source was read are written at the federation's size, with the export's record of how
    (``site_agent.npz_export``), so the site reading it signs the preprocessing a hospital's site would.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    arrays: dict[str, Any] = {}
    for split, part in (("train", images.train), ("test", images.test)):
        if len(part):
            pixels = denormalize(part.images)  # exact: the sites' normalisation is a fixed affine map of uint8
            arrays[f"{split}_images"] = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            arrays[f"{split}_labels"] = part.labels
    if images.preprocessing is not None:
        arrays[PREPROCESSING_KEY] = np.array(images.preprocessing.model_dump_json())
    np.savez(path, **arrays)
    return path


def site_cache(config: RunConfig, site_id: str) -> Path:
    """A simulated site's private working folder: its caches, audit log and data export."""
    return Path(config.out_dir).expanduser().resolve() / ".site-cache" / site_id


def export_path(config: RunConfig, run_dir: Path, site_id: str) -> Path:
    return site_cache(config, site_id) / "data" / f"{run_dir.name}.npz"


def write_run_shares(config: RunConfig, run_dir: Path) -> list[Share]:
    """Write every site's share of the run as its export (where :func:`simulated_site` points it); returns them."""
    shares = run_shares(config)
    for share in shares:
        write_export(share.images, export_path(config, run_dir, share.site_id))
    return shares


def remove_run_shares(config: RunConfig, run_dir: Path) -> None:
    for index in range(config.sites):
        export_path(config, run_dir, simulated_site_id(index)).unlink(missing_ok=True)


def node_index(context: Context) -> int:
    """Which simulated site a Flower node is (its partition id), checked.

    Raises:
        ConfigError: the node config is not the Simulation Engine's.
    """
    try:
        return SimulatedNode.model_validate(dict(context.node_config)).partition_id
    except ValidationError as exc:
        raise setting_error(exc, "node config '{key}': {msg}") from None


def simulated_site(run: RunConfig, run_dir: Path, context: Context) -> SiteSettings:
    """A simulated site's settings: a deployed site's, with its keys from the run folder and its share's export.

    Its policy is the run's own (``SitePolicy.permissive``): one operator plays every role.
    """
    site_id = simulated_site_id(node_index(context))
    pin_simulated_peers(run_dir / SIMULATION_KEYS, site_id)
    return SiteSettings(
        site_id=site_id,
        key_dir=run_dir / SIMULATION_KEYS / site_id,
        data_root=str(export_path(run, run_dir, site_id)),
        policy=SitePolicy.permissive(allow_real_init=run.init == "real", privacy_report=run.privacy_report,
                                     shadow_models=run.privacy_shadows, train_epochs=run.train_epochs,
                                     require_approval=run.require_approval),
        device=run.device,
        verify_md5=False,  # an export written by this harness, not an official file
        cache_dir=site_cache(run, site_id),
    )


def pin_simulated_peers(keys_root: Path, site_id: str) -> None:
    """Pin every other simulated site's signing key at ``site_id``, as hospitals pin their peers out of band
    (``site_agent.peers``): one operator holds every key here. Sites whose keys are already pinned are skipped."""
    key_dir = keys_root / site_id
    pinned = {p.site_id for p in load_peers(key_dir).peers}
    for public in sorted(keys_root.glob(f"*/{SIGNING_PUB}")):
        peer = public.parent.name
        if peer != site_id and peer not in pinned:  # the coordinator's folder holds no signing.pub
            pin_peer_key(key_dir, peer, crypto.load_public_key(public, crypto.VerifyKey))


def simulated_client_app(run: RunConfig, run_dir: Path, mods: list[Any] | None = None) -> ClientApp:
    """The real ClientApp, with each simulated node's settings from :func:`simulated_site`."""
    from site_agent.client_app import build_client_app

    return build_client_app(run.to_flower(), mods=mods or [],
                            settings_for=lambda context, _run: simulated_site(run, run_dir, context))

