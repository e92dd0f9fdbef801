"""The coordinator's keys: its HPKE private key, and per site the registered signing key and SuperNode key.

A site id maps to two keys: the Ed25519 key its bundles must be signed with, and the ECDSA key its
Flower SuperNode authenticates with (registered with the SuperLink under the site id as its name).
The ServerApp checks that both belong to the same site, so one site cannot speak for another.

Layout: ``shared.keys``. In simulation, :func:`create_simulation_keys` makes a fresh set per run under
``<run-dir>/keys``: ``coordinator/`` and one site key directory per simulated site.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from shared import crypto
from shared.errors import ConfigError, KeyFileError, VerificationError
from shared.fields import is_site_id
from shared.keys import COORDINATOR_KEY, COORDINATOR_PUB, NODES, SITES, create_coordinator_key, create_site_keys

_FLOWER_ID = ".flower-node-id"  # nodes/<site-id>.flower-node-id: the node id the SuperLink gave it
REVOKED = "revoked"  # revoked/<site-id>: when the site was revoked, so a refusal can say so
_SIMULATION_NOTE = (
    "SIMULATION KEYS: generated for this simulated run only, with every private key on one machine.\n"
    "Never use them for a real site or coordinator.\n"
)


@dataclass(frozen=True)
class CoordinatorKeys:
    """The private key bundles are sealed to, and the trust store: signing and SuperNode keys per site."""

    private_key: crypto.RecipientKey
    sites: dict[str, crypto.VerifyKey]
    node_keys: dict[str, crypto.NodePublicKey] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # site id -> when it was revoked (UTC)

    def verify_key_for(self, site_id: str) -> crypto.VerifyKey:
        """The registered key of a site.

        Raises:
            VerificationError: the site is not registered, or was revoked.
        """
        try:
            return self.sites[site_id]
        except KeyError:
            raise VerificationError(unknown_site(site_id, self.revoked)) from None


def unknown_site(site_id: str, revoked: dict[str, str]) -> str:
    """Why a site is not trusted: revoked (and when), or never registered."""
    if site_id in revoked:
        return f"site {site_id!r} was revoked at {revoked[site_id]} (coordinator sites revoke); it is refused"
    return f"site {site_id!r} is not registered with this coordinator"


def load_coordinator_keys(keys_dir: Path) -> CoordinatorKeys:
    """Read the coordinator key and every ``sites/<site-id>.pub``.

    Raises:
        KeyFileError: the directory or the coordinator key is missing, or a key is unreadable.
    """
    if not keys_dir.is_dir():
        raise KeyFileError(f"coordinator key directory {keys_dir.name!r} does not exist")
    private_key = crypto.load_private_key(keys_dir / COORDINATOR_KEY, crypto.RecipientKey)
    sites = {
        path.stem: crypto.load_public_key(path, crypto.VerifyKey)
        for path in sorted((keys_dir / SITES).glob("*.pub"))
        if is_site_id(path.stem)
    }
    node_keys = {
        path.stem: crypto.load_node_public_key(path)
        for path in sorted((keys_dir / NODES).glob("*.pub"))
        if is_site_id(path.stem)
    }
    revoked = {  # a site registered again after its revocation is trusted again
        path.name: path.read_text().strip()[:40]
        for path in sorted((keys_dir / REVOKED).glob("*"))
        if is_site_id(path.name) and path.name not in sites
    }
    return CoordinatorKeys(private_key, sites, node_keys, revoked)


def create_simulation_keys(keys_root: Path, site_ids: list[str]) -> Path:
    """Fresh coordinator and site keys for one simulated run; returns the coordinator key directory."""
    keys_root.mkdir(parents=True, exist_ok=True)
    (keys_root / "SIMULATION_KEYS.txt").write_text(_SIMULATION_NOTE)
    coordinator_dir = keys_root / "coordinator"
    coordinator_public = create_coordinator_key(coordinator_dir)
    for site_id in site_ids:
        site_dir = keys_root / site_id
        site_public = create_site_keys(site_dir)
        crypto.save_public_key(coordinator_public, site_dir / COORDINATOR_PUB)  # the site pins it
        crypto.save_public_key(site_public, coordinator_dir / SITES / f"{site_id}.pub")  # registration
    return coordinator_dir


def register_site(keys_dir: Path, site_id: str, signing_public_key: Path) -> str:
    """Add a site's signing key to the trust store; returns its fingerprint.

    Raises:
        ConfigError: the site id is not a plain name.
        KeyFileError: the key is unreadable or not Ed25519, or another key is already registered for the site.
    """
    if not is_site_id(site_id):
        raise ConfigError(f"site id {site_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    key = crypto.load_public_key(signing_public_key, crypto.VerifyKey)
    target = keys_dir / SITES / f"{site_id}.pub"
    if target.exists():
        existing = crypto.load_public_key(target, crypto.VerifyKey)
        if crypto.fingerprint(existing) != crypto.fingerprint(key):
            raise KeyFileError(f"site {site_id!r} already has another key registered; revoke it first")
        return crypto.fingerprint(key)
    crypto.save_public_key(key, target)
    (keys_dir / REVOKED / site_id).unlink(missing_ok=True)
    return crypto.fingerprint(key)


def register_node_key(keys_dir: Path, site_id: str, node_public_key: Path) -> str:
    """Bind a site's SuperNode auth key (OpenSSH ECDSA) to its site id; returns its OpenSSH fingerprint.

    Raises:
        ConfigError: the site id is not a plain name.
        KeyFileError: the key is unreadable or not ECDSA on a NIST curve, or another one is registered.
    """
    if not is_site_id(site_id):
        raise ConfigError(f"site id {site_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    key = crypto.load_node_public_key(node_public_key)
    fingerprint = crypto.node_key_fingerprint(key)
    target = keys_dir / NODES / f"{site_id}.pub"
    if target.exists():
        if crypto.node_key_fingerprint(crypto.load_node_public_key(target)) != fingerprint:
            raise KeyFileError(f"site {site_id!r} already has another SuperNode key registered; revoke it first")
        return fingerprint
    crypto.write_public(target, node_public_key.read_bytes())
    return fingerprint


def revoke_site(keys_dir: Path, site_id: str) -> None:
    """Remove a site from the trust store (signing and SuperNode key): its bundles are rejected from then on.

    Raises:
        KeyFileError: the site is not registered.
    """
    targets = [keys_dir / SITES / f"{site_id}.pub", keys_dir / NODES / f"{site_id}.pub"]
    if not is_site_id(site_id) or not any(t.is_file() for t in targets):
        raise KeyFileError(f"site {site_id!r} is not registered")
    for target in [*targets, keys_dir / NODES / f"{site_id}{_FLOWER_ID}"]:
        target.unlink(missing_ok=True)
    (keys_dir / REVOKED).mkdir(exist_ok=True)
    (keys_dir / REVOKED / site_id).write_text(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}\n")


def record_flower_node(keys_dir: Path, site_id: str, node_id: int) -> None:
    """Remember the SuperLink's node id for a site (``flwr supernode ls`` does not show names), to unregister it."""
    (keys_dir / NODES / f"{site_id}{_FLOWER_ID}").write_text(f"{node_id}\n")


def flower_node_of(keys_dir: Path, site_id: str) -> int | None:
    """The SuperLink node id recorded for a site, if any."""
    path = keys_dir / NODES / f"{site_id}{_FLOWER_ID}"
    return int(path.read_text()) if is_site_id(site_id) and path.is_file() else None
