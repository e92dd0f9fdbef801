"""Key files on disk: the layout both sides agree on, and creating a site's and the coordinator's keys.

Site key directory::

    <key-dir>/signing.key        Ed25519 private key (PKCS#8 PEM, 0600) - never leaves the site
    <key-dir>/signing.pub        its public key, given to the coordinator out of band
    <key-dir>/node.key           ECDSA P-384 SuperNode auth key (OpenSSH, 0600) - never leaves the site
    <key-dir>/node.pub           its OpenSSH public key, given to the coordinator to register the node
    <key-dir>/coordinator.pub    the coordinator's HPKE public key, pinned by the site
    <key-dir>/superlink-ca.crt   the study CA that signed the SuperLink's TLS certificate (default root)

Coordinator key directory::

    <keys-dir>/coordinator.key       HPKE private key (X25519, or MLKEM768-X25519: two PEM blocks; 0600)
    <keys-dir>/coordinator.pub       its public key, pinned by every site
    <keys-dir>/sites/<site-id>.pub   each site's Ed25519 signing key (the trust store)
    <keys-dir>/nodes/<site-id>.pub   each site's SuperNode auth key (OpenSSH), bound to the same site id
    <keys-dir>/tls/ca.crt, ca.key    the study CA (ca.crt goes to every site; ca.key stays here, 0600)
    <keys-dir>/tls/server.crt, .key  the SuperLink's TLS certificate and key
"""

from __future__ import annotations

from pathlib import Path

from shared import crypto
from shared.errors import KEYS_EXIST_HINT, KeyFileError

SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
COORDINATOR_KEY = "coordinator.key"
COORDINATOR_PUB = "coordinator.pub"
SITES = "sites"
NODES = "nodes"
NODE_KEY = "node.key"
NODE_PUB = "node.pub"
SITE_CA_CERT = "superlink-ca.crt"
TLS = "tls"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
SIMULATION_KEYS = "keys"  # <run-dir>/keys: a simulated run's coordinator/ and <site-id>/ key directories


def create_site_keys(key_dir: Path) -> crypto.VerifyKey:
    """Write a new signing key pair into ``key_dir``; returns the public key.

    Raises:
        KeyFileError: a signing key already exists there (never overwritten).
    """
    if (key_dir / SIGNING_KEY).exists():
        raise KeyFileError("a signing key already exists in the key directory; not overwriting it",
                           hint=KEYS_EXIST_HINT, local_detail=f"key directory: {key_dir}")
    key = crypto.generate_signing_key()
    crypto.save_private_key(key, key_dir / SIGNING_KEY)
    crypto.save_public_key(key.public_key(), key_dir / SIGNING_PUB)
    return key.public_key()


def create_node_key(key_dir: Path) -> crypto.NodePublicKey:
    """Write a new SuperNode auth key pair (ECDSA P-384, OpenSSH) into ``key_dir``; returns the public key.

    Raises:
        KeyFileError: a node key already exists there (never overwritten).
    """
    if (key_dir / NODE_KEY).exists():
        raise KeyFileError("a SuperNode key already exists in the key directory; not overwriting it",
                           hint=KEYS_EXIST_HINT, local_detail=f"key directory: {key_dir}")
    key = crypto.generate_node_key()
    crypto.save_node_key(key, key_dir / NODE_KEY, key_dir / NODE_PUB)
    return key.public_key()


def create_coordinator_key(
    keys_dir: Path, suite: crypto.HpkeSuite = crypto.HpkeSuite.X25519
) -> crypto.RecipientPublicKey:
    """Write a new HPKE key pair of ``suite`` into ``keys_dir``; returns the public key.

    Raises:
        KeyFileError: a coordinator key already exists there (never overwritten).
    """
    if (keys_dir / COORDINATOR_KEY).exists():
        raise KeyFileError("a coordinator key already exists in the key directory; not overwriting it",
                           hint=KEYS_EXIST_HINT, local_detail=f"key directory: {keys_dir}")
    key = crypto.generate_recipient_key(suite)
    crypto.save_private_key(key, keys_dir / COORDINATOR_KEY)
    crypto.save_public_key(key.public_key(), keys_dir / COORDINATOR_PUB)
    return key.public_key()


def create_site_identity(key_dir: Path) -> tuple[crypto.VerifyKey, crypto.NodePublicKey, list[str]]:
    """Create whichever of the signing key and the SuperNode key is missing in ``key_dir``.

    Returns the signing public key, the SuperNode public key and the names of the files just created.

    Raises:
        KeyFileError: both keys already exist (nothing is overwritten), or an existing key is unreadable.
    """
    created: list[str] = []
    if (key_dir / SIGNING_KEY).exists():
        signing = crypto.load_private_key(key_dir / SIGNING_KEY, crypto.SigningKey).public_key()
    else:
        signing = create_site_keys(key_dir)
        created.append(SIGNING_KEY)
    if (key_dir / NODE_KEY).exists():
        node = crypto.load_node_private_key(key_dir / NODE_KEY).public_key()
    else:
        node = create_node_key(key_dir)
        created.append(NODE_KEY)
    if not created:
        raise KeyFileError("the key directory already holds a signing key and a SuperNode key; not overwriting them",
                           hint=KEYS_EXIST_HINT, local_detail=f"key directory: {key_dir}")
    return signing, node, created
