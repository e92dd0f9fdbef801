"""Signing and HPKE keys on disk: PEM files, private keys owner-only.

Private keys are unencrypted PKCS#8 PEM written with mode 0600; public keys are SubjectPublicKeyInfo
PEM. A hybrid HPKE key is two PEM blocks, X25519 then ML-KEM-768. Loading checks the kind of key, so
a site key handed where the coordinator's is expected fails with a :class:`KeyFileError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared.crypto.sealing import RecipientKey, RecipientPublicKey, SigningKey, VerifyKey
from shared.errors import KeyFileError

PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
SPKI = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
KeyT = TypeVar("KeyT")
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----\s*", re.DOTALL)


def save_private_key(key: SigningKey | RecipientKey, path: Path) -> None:
    """Write a private key as unencrypted PKCS#8 PEM (two blocks for a hybrid HPKE key), owner-only (0600)."""
    if isinstance(key, RecipientKey):
        pem = key.x25519.private_bytes(*PKCS8) + (b"" if key.mlkem is None else key.mlkem.private_bytes(*PKCS8))
    else:
        pem = key.private_bytes(*PKCS8)
    write_private(path, pem)


def save_public_key(public_key: VerifyKey | RecipientPublicKey, path: Path) -> None:
    """Write a public key as SubjectPublicKeyInfo PEM (two blocks for a hybrid HPKE key)."""
    if isinstance(public_key, RecipientPublicKey):
        pem = public_key.x25519.public_bytes(*SPKI)
        pem += b"" if public_key.mlkem is None else public_key.mlkem.public_bytes(*SPKI)
    else:
        pem = public_key.public_bytes(*SPKI)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def load_private_key(path: Path, kind: type[SigningKey | RecipientKey]) -> SigningKey | RecipientKey:
    """Read a PEM private key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    return _load(path, kind, "private")


def load_public_key(
    path: Path, kind: type[VerifyKey | RecipientPublicKey]
) -> VerifyKey | RecipientPublicKey:
    """Read a PEM public key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    return _load(path, kind, "public")


def read_key_file(path: Path, what: str, parse: Callable[[bytes], KeyT], unreadable: str) -> KeyT:
    """``parse`` of a file's bytes; a missing or unparsable file is a KeyFileError naming ``what`` and the file.

    E.g. ``what="TLS key"``, ``unreadable="is not an unencrypted PEM private key"``.
    """
    try:
        return parse(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} file {path.name!r} not found") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{what} file {path.name!r} {unreadable}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (0600 from its creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _pem_blocks(path: Path, what: str) -> list[bytes]:
    try:
        blocks = _PEM_BLOCK.findall(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} key file {path.name!r} not found") from exc
    if not blocks:
        raise KeyFileError(f"{what} key file {path.name!r} is not a readable PEM key")
    return blocks


def _parse(block: bytes, path: Path, what: str) -> object:
    try:
        if what == "private":
            return serialization.load_pem_private_key(block, password=None)
        return serialization.load_pem_public_key(block)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{what} key file {path.name!r} is not a readable PEM key") from exc


# An HPKE key file holds an X25519 key, then an ML-KEM-768 key for the hybrid suite.
_RECIPIENT_PARTS = {
    RecipientKey: (X25519PrivateKey, mlkem.MLKEM768PrivateKey),
    RecipientPublicKey: (X25519PublicKey, mlkem.MLKEM768PublicKey),
}


def _load(path: Path, kind: type, what: str) -> object:
    keys = [_parse(block, path, what) for block in _pem_blocks(path, what)]
    if kind in _RECIPIENT_PARTS:
        return kind(*_recipient_parts(keys, *_RECIPIENT_PARTS[kind], path, what))
    if len(keys) != 1 or not isinstance(keys[0], kind):
        raise KeyFileError(f"{what} key file {path.name!r} holds a {type(keys[0]).__name__}, not {kind.__name__}")
    return keys[0]


def _recipient_parts(keys: list[object], classic: type, hybrid: type, path: Path, what: str) -> tuple:
    """(X25519 key, ML-KEM key or None) from the PEM blocks of an HPKE key file."""
    if not isinstance(keys[0], classic):
        raise KeyFileError(f"{what} key file {path.name!r} holds a {type(keys[0]).__name__}, not {classic.__name__}")
    if len(keys) == 1:
        return keys[0], None
    if len(keys) == 2 and isinstance(keys[1], hybrid):
        return keys[0], keys[1]
    raise KeyFileError(f"{what} key file {path.name!r} is neither an X25519 nor an MLKEM768-X25519 HPKE key")
