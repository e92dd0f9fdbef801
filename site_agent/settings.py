"""What a site knows about itself, read once per message from its own configuration: the SuperNode's
``--node-config`` (:class:`NodeConfig`: ``site-id``, ``key-dir``, ``data-root``, ``policy-file``, ``device``,
``cache-dir``, ``verify-md5``), which ``site-agent join`` writes. The simulation harness builds the same
settings for its simulated sites (``harness.sites``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.fields import SiteId, setting_error
from site_agent.policy import SitePolicy


@dataclass(frozen=True)
class SiteSettings:
    site_id: str
    key_dir: Path
    data_root: str
    policy: SitePolicy
    device: str
    verify_md5: bool
    cache_dir: Path  # site-private: MTT expert trajectories, audit log, budgets; never released


class NodeConfig(BaseModel):
    """A deployed site's ``--node-config`` (``site-agent join`` writes it); keys this site does not read are ignored."""

    model_config = ConfigDict(frozen=True, alias_generator=lambda name: name.replace("_", "-"))  # Flower's TOML keys

    site_id: SiteId
    key_dir: Path
    data_root: str = ""  # empty: MEDMNIST_ROOT, then ~/.medmnist
    policy_file: str = ""  # empty: the built-in policy
    device: str = "auto"
    verify_md5: bool = True
    cache_dir: Path = Path("~/.cache/feddistill")


def site_settings(node_config: Mapping[str, Any]) -> SiteSettings:
    """This site's settings from its node config.

    Raises:
        ConfigError: a key is missing (e.g. "node config 'key-dir': Field required") or has the wrong type or range;
            the policy file is bad.
    """
    try:
        node = NodeConfig.model_validate(dict(node_config))
    except ValidationError as exc:
        raise setting_error(exc, "node config '{key}': {msg}") from None
    return SiteSettings(
        site_id=node.site_id,
        key_dir=node.key_dir.expanduser(),
        data_root=node.data_root,
        policy=SitePolicy.from_file(Path(node.policy_file)) if node.policy_file else SitePolicy(),
        device=node.device,
        verify_md5=node.verify_md5,
        cache_dir=node.cache_dir.expanduser(),
    )
