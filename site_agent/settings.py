"""What a site knows about itself, read once per message from its own configuration.

Deployment: from the SuperNode's ``--node-config`` (:class:`NodeConfig`: ``site-id``, ``key-dir``,
``data-root``, ``policy-file``, ``device``, ``cache-dir``, ``verify-md5``, optionally
``partition-id``/``num-partitions`` with ``partition``, ``alpha`` and ``partition-seed`` to use one
share of a dataset). Simulation: Flower gives only ``partition-id``/``num-partitions``, so the
simulated site ``site-<i>`` takes partition i of the run's dataset and its keys from the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config import RunConfig, simulated_site_id
from shared.errors import ConfigError
from shared.keys import SIMULATION_KEYS
from shared.schemas import PartitionScheme, SiteId, setting_error
from site_agent.policy import SitePolicy


@dataclass(frozen=True)
class PartitionSpec:
    """Which share of a dataset this site holds."""

    index: int
    count: int
    scheme: PartitionScheme
    alpha: float
    seed: int


@dataclass(frozen=True)
class SiteSettings:
    site_id: str
    key_dir: Path
    data_root: str
    partition: PartitionSpec | None
    policy: SitePolicy
    device: str
    verify_md5: bool
    simulated: bool
    cache_dir: Path  # site-private: MTT expert trajectories, never released
    share_dir: Path | None = None  # simulation only: where the site notes which share it loaded (a study checks it)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _NodeKeys(BaseModel):
    # Flower's node config uses the TOML's kebab-case keys; keys this site does not read are ignored.
    model_config = ConfigDict(frozen=True, alias_generator=_kebab)


class SimulatedNode(_NodeKeys):
    """The node config Flower's simulation gives each node."""

    partition_id: int = Field(ge=0)
    num_partitions: int = Field(ge=1)


class NodeConfig(_NodeKeys):
    """A deployed site's ``--node-config`` (``site-agent join`` writes it)."""

    site_id: SiteId
    key_dir: Path
    data_root: str = ""  # empty: MEDMNIST_ROOT, then ~/.medmnist
    policy_file: str = ""  # empty: the built-in policy
    device: str = "auto"
    verify_md5: bool = True
    cache_dir: Path = Path("~/.cache/feddistill")
    # Demos and tests: share partition-id of num-partitions of a public dataset.
    partition_id: int | None = Field(None, ge=0)
    num_partitions: int | None = Field(None, ge=1)
    partition: PartitionScheme = PartitionScheme.IID
    alpha: float = Field(0.5, gt=0)
    partition_seed: int = Field(0, ge=0)

    def partition_spec(self) -> PartitionSpec | None:
        """The share this site uses, or None for all of its data.

        Raises:
            ConfigError: only one of ``partition-id`` and ``num-partitions`` is given, or the id is too large.
        """
        if self.partition_id is None and self.num_partitions is None:
            return None
        if self.partition_id is None or self.num_partitions is None:
            raise ConfigError("node config 'partition-id' and 'num-partitions' go together")
        if self.partition_id >= self.num_partitions:
            raise ConfigError(f"node config 'partition-id' {self.partition_id} must be below 'num-partitions' "
                              f"({self.num_partitions})")
        return PartitionSpec(self.partition_id, self.num_partitions, self.partition, self.alpha, self.partition_seed)


NodeT = TypeVar("NodeT", bound=_NodeKeys)


def parse_node_config(model: type[NodeT], node_config: Mapping[str, Any]) -> NodeT:
    """The node config as ``model``; a missing or bad value is a ConfigError naming its key.

    Raises:
        ConfigError: e.g. "node config 'key-dir': Field required".
    """
    try:
        return model.model_validate(dict(node_config))
    except ValidationError as exc:
        raise setting_error(exc, "node config '{key}': {msg}") from None


SHARES = "shares"  # <run-dir>/shares/<site>.json: each simulated site's share digest


def simulation_site_key_dir(run_dir: Path, site_id: str) -> Path:
    return run_dir / SIMULATION_KEYS / site_id


def site_settings(node_config: Mapping[str, Any], run: RunConfig, run_dir: Path) -> SiteSettings:
    """Settings for this site from the node config, or the simulation defaults when it has no site id.

    Raises:
        ConfigError: a deployed site lacks ``key-dir``, a value has the wrong type or range, or the node
            config has neither a site id nor a simulation partition.
    """
    if "site-id" in node_config:
        return _deployed(parse_node_config(NodeConfig, node_config))
    if "partition-id" not in node_config:
        raise ConfigError("node config has neither 'site-id' (a deployed site) nor 'partition-id' (a simulated one)")
    node = parse_node_config(SimulatedNode, node_config)
    site_id = simulated_site_id(node.partition_id)
    return SiteSettings(
        site_id=site_id,
        key_dir=simulation_site_key_dir(run_dir, site_id),
        data_root=run.data_root,
        partition=PartitionSpec(node.partition_id, node.num_partitions, run.partition, run.alpha, run.seed),
        # Simulated sites accept the simulation's own settings: one operator plays every role.
        policy=SitePolicy.permissive(allow_real_init=run.init == "real", privacy_report=run.privacy_report,
                                     shadow_models=run.privacy_shadows, train_epochs=run.train_epochs,
                                     require_approval=run.require_approval),
        device=run.device,
        verify_md5=True,
        simulated=True,
        cache_dir=Path(run.out_dir).expanduser().resolve() / ".site-cache" / site_id,
        share_dir=run_dir / SHARES,
    )


def _deployed(node: NodeConfig) -> SiteSettings:
    return SiteSettings(
        site_id=node.site_id,
        key_dir=node.key_dir.expanduser(),
        data_root=node.data_root,
        partition=node.partition_spec(),
        policy=SitePolicy.from_file(Path(node.policy_file)) if node.policy_file else SitePolicy(),
        device=node.device,
        verify_md5=node.verify_md5,
        simulated=False,
        cache_dir=node.cache_dir.expanduser(),
    )
