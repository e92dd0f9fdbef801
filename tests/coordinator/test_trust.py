"""The coordinator's trust store: register, list, refuse a second key, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.binding import bind_nodes
from coordinator.trust import load_coordinator_keys, register_site, revoke_site
from shared.errors import ConfigError, KeyFileError, VerificationError
from shared.keys import COORDINATOR_PUB, create_coordinator_key, create_site_keys


def test_register_then_revoke(tmp_path: Path) -> None:
    """A registered site's key is trusted until it is revoked."""
    create_coordinator_key(tmp_path / "coord")
    public = create_site_keys(tmp_path / "site")
    register_site(tmp_path / "coord", "st-marys", tmp_path / "site" / "signing.pub")
    keys = load_coordinator_keys(tmp_path / "coord")
    assert keys.verify_key_for("st-marys").public_bytes_raw() == public.public_bytes_raw()
    with pytest.raises(VerificationError, match="'elsewhere' is not registered"):
        keys.verify_key_for("elsewhere")
    revoke_site(tmp_path / "coord", "st-marys")
    revoked = load_coordinator_keys(tmp_path / "coord")
    with pytest.raises(VerificationError, match=r"'st-marys' was revoked at \d{4}-\d\d-\d\d .*UTC"):
        revoked.verify_key_for("st-marys")
    problem = bind_nodes([_Node(1, "st-marys")], revoked.sites, revoked.node_keys, revoked.revoked)[1].problem
    assert "'st-marys', a site revoked at" in problem
    with pytest.raises(KeyFileError, match="not registered"):
        revoke_site(tmp_path / "coord", "st-marys")
    register_site(tmp_path / "coord", "st-marys", tmp_path / "site" / "signing.pub")  # trusted again
    again = load_coordinator_keys(tmp_path / "coord")
    assert again.revoked == {} and again.verify_key_for("st-marys").public_bytes_raw() == public.public_bytes_raw()


@dataclass
class _Node:
    node_id: int
    name: str
    public_key: bytes = b""


def test_register_refuses_wrong_kind_other_key_and_bad_ids(tmp_path: Path) -> None:
    """Only an Ed25519 key, only one per site, only plain site ids."""
    create_coordinator_key(tmp_path / "coord")
    create_site_keys(tmp_path / "a")
    create_site_keys(tmp_path / "b")
    register_site(tmp_path / "coord", "site-a", tmp_path / "a" / "signing.pub")
    register_site(tmp_path / "coord", "site-a", tmp_path / "a" / "signing.pub")  # same key again: fine
    with pytest.raises(KeyFileError, match="already has another key"):
        register_site(tmp_path / "coord", "site-a", tmp_path / "b" / "signing.pub")
    with pytest.raises(KeyFileError, match="not Ed25519PublicKey"):
        register_site(tmp_path / "coord", "site-c", tmp_path / "coord" / COORDINATOR_PUB)
    with pytest.raises(ConfigError, match="site id"):
        register_site(tmp_path / "coord", "../evil", tmp_path / "a" / "signing.pub")


def test_missing_coordinator_key_directory_is_clear(tmp_path: Path) -> None:
    """Pointing keys-dir at nothing fails at start with a key error."""
    with pytest.raises(KeyFileError, match="does not exist"):
        load_coordinator_keys(tmp_path / "nowhere")
