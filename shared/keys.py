"""Key files on disk: the layout both sides agree on, and creating a site's signing key.

Site key directory::

    <key-dir>/signing.key       Ed25519 private key (PKCS#8 PEM, 0600) - never leaves the site
    <key-dir>/signing.pub       its public key, given to the coordinator out of band
    <key-dir>/coordinator.pub   the coordinator's X25519 public key, pinned by the site

Coordinator key directory::

    <keys-dir>/coordinator.key       X25519 private key (PKCS#8 PEM, 0600)
    <keys-dir>/coordinator.pub       its public key, pinned by every site
    <keys-dir>/sites/<site-id>.pub   each site's Ed25519 signing key (the trust store)
"""

from __future__ import annotations

from pathlib import Path

from shared import crypto
from shared.errors import KeyFileError

SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
COORDINATOR_KEY = "coordinator.key"
COORDINATOR_PUB = "coordinator.pub"
SITES = "sites"
SIMULATION_KEYS = "keys"  # <run-dir>/keys: a simulated run's coordinator/ and <site-id>/ key directories


def create_site_keys(key_dir: Path) -> crypto.VerifyKey:
    """Write a new signing key pair into ``key_dir``; returns the public key.

    Raises:
        KeyFileError: a signing key already exists there (never overwritten).
    """
    if (key_dir / SIGNING_KEY).exists():
        raise KeyFileError(f"a signing key already exists in the key directory {key_dir.name!r}; not overwriting it")
    key = crypto.generate_signing_key()
    crypto.save_private_key(key, key_dir / SIGNING_KEY)
    crypto.save_public_key(key.public_key(), key_dir / SIGNING_PUB)
    return key.public_key()


def create_coordinator_key(keys_dir: Path) -> crypto.RecipientPublicKey:
    """Write a new HPKE key pair into ``keys_dir``; returns the public key.

    Raises:
        KeyFileError: a coordinator key already exists there (never overwritten).
    """
    if (keys_dir / COORDINATOR_KEY).exists():
        raise KeyFileError(f"a coordinator key already exists in {keys_dir.name!r}; not overwriting it")
    key = crypto.generate_recipient_key()
    crypto.save_private_key(key, keys_dir / COORDINATOR_KEY)
    crypto.save_public_key(key.public_key(), keys_dir / COORDINATOR_PUB)
    return key.public_key()
