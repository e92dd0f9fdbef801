"""What a site knows about itself, read once per message from its own configuration.

Deployment: from the SuperNode's ``--node-config`` (``site-id``, ``key-dir``, ``data-root``,
``policy-file``, ``device``, optionally ``partition-id``/``num-partitions`` to use one share of a
dataset, ``verify-md5``). Simulation: Flower gives only ``partition-id``/``num-partitions``, so the
simulated site ``site-<i>`` takes partition i of the run's dataset and its keys from the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import RunConfig, simulated_site_id
from shared.errors import ConfigError
from shared.keys import SIMULATION_KEYS
from shared.schemas import PartitionScheme
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


def simulation_site_key_dir(run_dir: Path, site_id: str) -> Path:
    return run_dir / SIMULATION_KEYS / site_id


def site_settings(node_config: Mapping[str, Any], run: RunConfig, run_dir: Path) -> SiteSettings:
    """Settings for this site from the node config, or the simulation defaults when it has no site id.

    Raises:
        ConfigError: a deployed site lacks ``key-dir``, or a value has the wrong type.
    """
    if "site-id" not in node_config:
        index = int(node_config["partition-id"])
        site_id = simulated_site_id(index)
        # Simulated sites accept the simulation's own settings: one operator plays every role.
        policy = SitePolicy.permissive(allow_real_init=run.init == "real")
        return SiteSettings(
            site_id=site_id,
            key_dir=simulation_site_key_dir(run_dir, site_id),
            data_root=run.data_root,
            partition=PartitionSpec(index, int(node_config["num-partitions"]), run.partition, run.alpha, run.seed),
            policy=policy,
            device=run.device,
            verify_md5=True,
            simulated=True,
            cache_dir=Path(run.out_dir).expanduser().resolve() / ".site-cache" / site_id,
        )
    try:
        key_dir = Path(str(node_config["key-dir"])).expanduser()
    except KeyError as exc:
        raise ConfigError("node config 'key-dir' is required for a deployed site") from exc
    partition = None
    if "partition-id" in node_config:
        try:
            partition = PartitionSpec(
                int(node_config["partition-id"]), int(node_config["num-partitions"]),
                PartitionScheme(str(node_config.get("partition", "iid"))),
                float(node_config.get("alpha", 0.5)), int(node_config.get("partition-seed", 0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                "node config 'partition-id' needs an integer 'num-partitions' and valid 'partition'/'alpha'"
            ) from exc
    policy_file = node_config.get("policy-file")
    return SiteSettings(
        site_id=str(node_config["site-id"]),
        key_dir=key_dir,
        data_root=str(node_config.get("data-root", "")),
        partition=partition,
        policy=SitePolicy.from_file(Path(str(policy_file))) if policy_file else SitePolicy(),
        device=str(node_config.get("device", "auto")),
        verify_md5=bool(node_config.get("verify-md5", True)),
        simulated=False,
        cache_dir=Path(str(node_config.get("cache-dir", "~/.cache/feddistill"))).expanduser(),
    )
