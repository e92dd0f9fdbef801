"""SuperNode authentication keys (Flower's, not ours): an ECDSA P-384 key pair per site, in OpenSSH format.

Flower signs the node's requests with the private key and the SuperLink admits registered keys only.
A SuperNode key's fingerprint is OpenSSH's (``SHA256:`` + base64), as ``ssh-keygen -l`` prints it.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.crypto.key_files import SPKI, read_key_file, write_private, write_public
from shared.errors import KeyFileError

NodeKey = ec.EllipticCurvePrivateKey
NodePublicKey = ec.EllipticCurvePublicKey

_FLOWER_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what Flower's node auth accepts


def generate_node_key() -> NodeKey:
    """A new ECDSA P-384 key for Flower SuperNode authentication."""
    return ec.generate_private_key(ec.SECP384R1())


def save_node_key(key: NodeKey, private_path: Path, public_path: Path) -> None:
    """Write the OpenSSH private key (0600) and the one-line OpenSSH public key Flower registers."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    write_private(private_path, pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_public(public_path, public + b"\n")


def load_node_private_key(path: Path) -> NodeKey:
    """Read an OpenSSH SuperNode private key.

    Raises:
        KeyFileError: missing, unreadable, or not ECDSA on a NIST curve (what Flower accepts).
    """
    key = read_key_file(path, "SuperNode key", lambda data: serialization.load_ssh_private_key(data, password=None),
                        "is not an unencrypted OpenSSH private key", private=True)
    return _nist_ec(key, path)


def load_node_public_key(path: Path) -> NodePublicKey:
    """Read an OpenSSH SuperNode public key (``ecdsa-sha2-nistp384 AAAA...``).

    Raises:
        KeyFileError: missing, unreadable, or not ECDSA on a NIST curve.
    """
    key = read_key_file(path, "SuperNode public key", serialization.load_ssh_public_key, "is not an OpenSSH public key")
    return _nist_ec(key, path)


def node_key_to_spki(public_key: NodePublicKey) -> bytes:
    """A SuperNode key in the form Flower stores and reports it (SubjectPublicKeyInfo PEM)."""
    return public_key.public_bytes(*SPKI)


def node_key_from_spki(pem: bytes) -> NodePublicKey | None:
    """The SuperNode key as Flower reports it (``NodeInfo.public_key``: SPKI PEM); None if absent or unreadable."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def node_key_fingerprint(public_key: NodePublicKey) -> str:
    """OpenSSH's fingerprint (``SHA256:<base64>``), the same as ``ssh-keygen -lf node.pub`` prints."""
    blob = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _nist_ec(key: object, path: Path) -> NodeKey | NodePublicKey:
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
    if not is_ec or key.curve.name not in _FLOWER_CURVES:
        raise KeyFileError(f"SuperNode key file {path.name!r} is not ECDSA on a NIST curve (Flower rejects it)")
    return key
