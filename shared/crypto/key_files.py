"""Signing and HPKE keys on disk: PEM files, private keys owner-only.

Private keys are unencrypted PKCS#8 PEM written with mode 0600; public keys are SubjectPublicKeyInfo
PEM. A hybrid HPKE key is two PEM blocks, X25519 then ML-KEM-768. Loading checks the kind of key, so
a site key handed where the coordinator's is expected fails with a :class:`KeyFileError`.

Every key file (private or public, keys and certificates) is written to a new file created with
``O_EXCL | O_NOFOLLOW`` beside it and renamed into place, so a link planted at the key's path is
replaced, never followed; a key folder that other users may write to is refused. As ssh does, a
private key is read only if it is not a symbolic link and no other user may read or write it.

A site loads its keys for every request, so a :class:`KeyFileError` may travel to the coordinator: its
message names the kind of key ("signing key file is open to other users"), never a path or a file name;
``local_detail`` names the file, for the site's own operator and log.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared.crypto.sealing import RecipientKey, RecipientPublicKey, SigningKey, VerifyKey
from shared.errors import KeyFileError, missing_key_hint

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
    write_public(path, pem)


def load_private_key(path: Path, kind: type[SigningKey | RecipientKey]) -> SigningKey | RecipientKey:
    """Read a PEM private key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, open to other users, or holds another kind of key.
    """
    return _load(path, kind, private=True)


def load_public_key(
    path: Path, kind: type[VerifyKey | RecipientPublicKey]
) -> VerifyKey | RecipientPublicKey:
    """Read a PEM public key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    return _load(path, kind, private=False)


def read_key_file(
    path: Path, what: str, parse: Callable[[bytes], KeyT], unreadable: str, private: bool = False
) -> KeyT:
    """``parse`` of a file's bytes; a missing or unparsable file is a KeyFileError naming ``what`` (the file in
    its ``local_detail``).

    E.g. ``what="TLS key"``, ``unreadable="is not an unencrypted PEM private key"``. A ``private`` file
    is read as :func:`read_private` reads it.
    """
    data = _read(path, what, private)
    try:
        return parse(data)
    # NotImplementedError: cryptography's answer to some malformed OpenSSH keys (a compressed EC point)
    except (ValueError, TypeError, UnsupportedAlgorithm, NotImplementedError) as exc:
        raise KeyFileError(f"{what} file {unreadable}", local_detail=_file(path)) from exc


def read_private(path: Path, what: str) -> bytes:
    """A private key file's bytes, refused when it is a symbolic link or other users may read or write it.

    Raises:
        FileNotFoundError: no such file.
        KeyFileError: a link, or a mode open to group or others (``chmod 600`` fixes it); the message names
            ``what``, its ``local_detail`` the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{what} file is a symbolic link; private keys are read only from the file itself "
                               "(point the key folder option at where it lives)", local_detail=_file(path)) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{what} file is open to other users (mode {mode:04o}); make it owner-only with "
                               "chmod 600", local_detail=f"{_file(path)}; fix: chmod 600 {shlex.quote(str(path))}")
        return handle.read()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (0600 from its creation on)."""
    _write_new(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a public key or certificate (0644), never through a link planted at ``path``."""
    _write_new(path, data, 0o644)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a fresh file beside ``path`` (``O_EXCL | O_NOFOLLOW``), write it, and rename it over ``path``.

    Raises:
        KeyFileError: the folder is writable by other users, who could swap the key after it is written.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder_mode = stat.S_IMODE(folder.stat().st_mode)
    if folder_mode & 0o022:
        raise KeyFileError(f"key folder is writable by other users (mode {folder_mode:04o}); make it owner-only "
                           f"first with chmod 700", local_detail=f"folder: {folder}; fix: chmod 700 "
                           f"{shlex.quote(str(folder))}")
    temporary = folder / f".{path.name}.{secrets.token_hex(8)}.new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed a public file's mode
        os.replace(temporary, path)  # rename replaces a link at ``path`` itself, never its target
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read(path: Path, what: str, private: bool) -> bytes:
    """A key file's bytes (a private one as :func:`read_private` reads it); a missing one is a KeyFileError."""
    try:
        return read_private(path, what) if private else path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} file not found", hint=missing_key_hint(path.name),
                           local_detail=f"missing file: {path}") from exc


def _file(path: Path) -> str:
    return f"file: {path}"


# What a key of each kind is called in an error: the file's own name stays in its ``local_detail``.
_KIND_NAMES = {SigningKey: "signing key", VerifyKey: "public signing key", RecipientKey: "coordinator key",
               RecipientPublicKey: "coordinator public key"}


def _pem_blocks(path: Path, what: str, private: bool) -> list[bytes]:
    blocks = _PEM_BLOCK.findall(_read(path, what, private))
    if not blocks:
        raise KeyFileError(f"{what} file is not a readable PEM key", local_detail=_file(path))
    return blocks


def _parse(block: bytes, path: Path, what: str, private: bool) -> object:
    try:
        if private:
            return serialization.load_pem_private_key(block, password=None)
        return serialization.load_pem_public_key(block)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{what} file is not a readable PEM key", local_detail=_file(path)) from exc


# An HPKE key file holds an X25519 key, then an ML-KEM-768 key for the hybrid suite.
_RECIPIENT_PARTS = {
    RecipientKey: (X25519PrivateKey, mlkem.MLKEM768PrivateKey),
    RecipientPublicKey: (X25519PublicKey, mlkem.MLKEM768PublicKey),
}


def _load(path: Path, kind: type, private: bool) -> object:
    what = _KIND_NAMES.get(kind, "private key" if private else "public key")
    keys = [_parse(block, path, what, private) for block in _pem_blocks(path, what, private)]
    if kind in _RECIPIENT_PARTS:
        return kind(*_recipient_parts(keys, *_RECIPIENT_PARTS[kind], path, what))
    if len(keys) != 1 or not isinstance(keys[0], kind):
        raise KeyFileError(f"{what} file holds a {type(keys[0]).__name__}, not {kind.__name__}",
                           local_detail=_file(path))
    return keys[0]


def _recipient_parts(keys: list[object], classic: type, hybrid: type, path: Path, what: str) -> tuple:
    """(X25519 key, ML-KEM key or None) from the PEM blocks of an HPKE key file."""
    if not isinstance(keys[0], classic):
        raise KeyFileError(f"{what} file holds a {type(keys[0]).__name__}, not {classic.__name__}",
                           local_detail=_file(path))
    if len(keys) == 1:
        return keys[0], None
    if len(keys) == 2 and isinstance(keys[1], hybrid):
        return keys[0], keys[1]
    raise KeyFileError(f"{what} file is neither an X25519 nor an MLKEM768-X25519 HPKE key", local_detail=_file(path))
