"""What a site knows about itself, read once per message from its own configuration: the SuperNode's
``--node-config`` (:class:`NodeConfig`: ``site-id``, ``key-dir``, ``data-root``, ``policy-file``, ``device``,
``cache-dir``, ``verify-md5``), which ``site-agent join`` writes. The simulation harness builds the same
settings for its simulated sites (``harness.sites``).

A site's private cache (audit log, budgets, held releases, MTT experts) is ``cache-dir``, by default
:func:`default_cache_dir`: the one default ``site-agent join`` writes and the local review commands read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import ConfigError
from shared.fields import SiteId, is_site_id, setting_error
from site_agent.policy import SitePolicy


def cache_root() -> Path:
    """This machine's site caches, one folder per site id: ``$XDG_CACHE_HOME/feddistill``, else ``~/.cache/feddistill``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "feddistill"


def default_cache_dir(site_id: str) -> Path:
    """A site's private cache unless told otherwise: ``<cache_root()>/<site-id>`` (one per site, so several sites on
    one machine never share an audit log or a budget).

    Raises:
        ConfigError: ``site_id`` is not a site id (it names a folder, so it may not be a path).
    """
    if not is_site_id(site_id):
        raise ConfigError(f"site id {site_id!r} is not a site id: letters, digits, '.', '_' and '-' only")
    return cache_root() / site_id


def find_cache_dir(cache_dir: Path | None, site_id: str | None) -> Path:
    """The cache a local command reads: ``cache_dir``; else the site's default cache; else, with no site named, the
    one site cache this machine holds.

    Raises:
        ConfigError: neither is given and this machine holds no site cache, or several.
    """
    if cache_dir is not None:
        return cache_dir.expanduser()
    if site_id is not None:
        return default_cache_dir(site_id)
    root = cache_root()
    sites = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(sites) != 1:
        found = f"{len(sites)} site caches in {root} ({', '.join(sites)})" if sites else f"no site cache in {root}"
        raise ConfigError(f"{found}; say which site", hint="give --site-id, or --cache-dir (the folder `site-agent "
                          "join` names when it starts)")
    return root / sites[0]


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
    cache_dir: Path | None = None  # None: default_cache_dir(site-id)


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
        cache_dir=find_cache_dir(node.cache_dir, node.site_id),
    )
