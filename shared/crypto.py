"""Signatures and encryption: the only module that imports ``cryptography``.

Constructions (standard ones, nothing composed by hand):

* **Signature**: Ed25519 by the site's signing key over ``SIGNATURE_DOMAIN || message``. The domain
  string keeps a bundle signature from being valid for any other use of the same key.
* **Encryption**: HPKE base mode (RFC 9180) with the suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  AES-256-GCM, to the coordinator's X25519 public key. The caller's ``info`` bytes are bound into
  the key schedule, so a ciphertext opens only with exactly the same ``info``. The ciphertext is the
  library's single-shot output: the 32-byte encapsulated key followed by the AEAD ciphertext.

Keys are stored as PEM files (PKCS#8 private keys written with mode 0600, SubjectPublicKeyInfo
public keys). A key's fingerprint is the SHA-256 of its raw public bytes, in hex.

Round trip::

    >>> site, coord = generate_signing_key(), generate_recipient_key()
    >>> sig = sign(site, b"manifest+payload")
    >>> verify(site.public_key(), b"manifest+payload", sig)
    >>> ct = seal(b"secret", coord.public_key(), info=b"run-1|site-a|nonce")
    >>> open_sealed(ct, coord, info=b"run-1|site-a|nonce")
    b'secret'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared.errors import DecryptionError, KeyFileError, VerificationError

SIGNATURE_DOMAIN = b"feddistill/bundle-signature/v1\x00"
SIGNATURE_BYTES = 64
HPKE_SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

SigningKey = Ed25519PrivateKey
VerifyKey = Ed25519PublicKey
RecipientKey = X25519PrivateKey
RecipientPublicKey = X25519PublicKey

__all__ = [
    "HPKE_SUITE_NAME",
    "SIGNATURE_BYTES",
    "RecipientKey",
    "RecipientPublicKey",
    "SigningKey",
    "VerifyKey",
    "fingerprint",
    "generate_recipient_key",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "open_sealed",
    "save_private_key",
    "save_public_key",
    "seal",
    "sign",
    "verify",
]


def generate_signing_key() -> SigningKey:
    """A new Ed25519 key for signing bundles (one per site)."""
    return Ed25519PrivateKey.generate()


def generate_recipient_key() -> RecipientKey:
    """A new X25519 key pair for receiving HPKE-sealed bundles (the coordinator's)."""
    return X25519PrivateKey.generate()


def sign(key: SigningKey, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes) over the domain-separated message."""
    return key.sign(SIGNATURE_DOMAIN + message)


def verify(public_key: VerifyKey, message: bytes, signature: bytes) -> None:
    """Check a signature made by :func:`sign`.

    Raises:
        VerificationError: the signature does not match this key and message.
    """
    try:
        public_key.verify(signature, SIGNATURE_DOMAIN + message)
    except InvalidSignature as exc:
        raise VerificationError("bundle signature does not match the site's registered key") from exc


def seal(plaintext: bytes, recipient: RecipientPublicKey, info: bytes) -> bytes:
    """HPKE-encrypt ``plaintext`` to ``recipient`` with ``info`` bound into the key schedule."""
    return _SUITE.encrypt(plaintext, recipient, info=info)


def open_sealed(ciphertext: bytes, key: RecipientKey, info: bytes) -> bytes:
    """Decrypt what :func:`seal` produced.

    Raises:
        DecryptionError: wrong key, altered ciphertext, or ``info`` differs from the sealer's.
    """
    try:
        return _SUITE.decrypt(ciphertext, key, info=info)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError(
            "bundle does not decrypt with this coordinator's key and its header "
            "(tampered ciphertext or header, or sealed to another key)"
        ) from exc


def fingerprint(public_key: VerifyKey | RecipientPublicKey) -> str:
    """SHA-256 of the raw public key bytes, hex: short enough to compare over the phone."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def save_private_key(key: SigningKey | RecipientKey, path: Path) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, readable by the owner only (0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)


def save_public_key(public_key: VerifyKey | RecipientPublicKey, path: Path) -> None:
    """Write a public key as SubjectPublicKeyInfo PEM."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def load_private_key(path: Path, kind: type[SigningKey | RecipientKey]) -> SigningKey | RecipientKey:
    """Read a PEM private key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise KeyFileError(f"private key file {path.name!r} not found") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"private key file {path.name!r} is not a readable PEM key") from exc
    if not isinstance(key, kind):
        raise KeyFileError(f"private key file {path.name!r} holds a {type(key).__name__}, not {kind.__name__}")
    return key


def load_public_key(
    path: Path, kind: type[VerifyKey | RecipientPublicKey]
) -> VerifyKey | RecipientPublicKey:
    """Read a PEM public key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyFileError(f"public key file {path.name!r} not found") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"public key file {path.name!r} is not a readable PEM key") from exc
    if not isinstance(key, kind):
        raise KeyFileError(f"public key file {path.name!r} holds a {type(key).__name__}, not {kind.__name__}")
    return key
