"""Signatures and encryption: the only module that imports ``cryptography``.

Constructions (standard ones, nothing composed by hand):

* **Signature**: Ed25519 by the site's signing key over ``SIGNATURE_DOMAIN || message``. The domain
  string keeps a bundle signature from being valid for any other use of the same key.
* **Encryption**: HPKE base mode (RFC 9180) with HKDF-SHA256 and AES-256-GCM to the coordinator's
  public key, under one of two KEMs (:class:`HpkeSuite`): DHKEM(X25519, HKDF-SHA256), the default,
  or the hybrid post-quantum MLKEM768-X25519. The caller's ``info`` bytes are bound into the key
  schedule, so a ciphertext opens only with exactly the same ``info``. The ciphertext is the
  library's single-shot output: the encapsulated key (32 bytes, or 1120 for the hybrid) followed by
  the AEAD ciphertext. The suite is a property of the key: a site seals with its pinned key's suite.
* **SuperNode authentication** (Flower's, not ours): an ECDSA P-384 key pair in OpenSSH format per
  site; Flower signs the node's requests with it and the SuperLink admits registered keys only.
* **TLS** for the SuperLink: a small study CA (ECDSA P-384) that issues the server certificate.

Keys are stored as PEM files (PKCS#8 private keys written with mode 0600, SubjectPublicKeyInfo
public keys; a hybrid HPKE key is two PEM blocks, X25519 then ML-KEM-768). A key's fingerprint is
the SHA-256 of its raw public bytes (X25519 then ML-KEM for the hybrid), in hex. A SuperNode key's
fingerprint is OpenSSH's (``SHA256:`` + base64), as ``ssh-keygen -l`` prints it.

Round trip::

    >>> site, coord = generate_signing_key(), generate_recipient_key()
    >>> sig = sign(site, b"manifest+payload")
    >>> verify(site.public_key(), b"manifest+payload", sig)
    >>> ct = seal(b"secret", coord.public_key(), info=b"run-1|site-a|nonce")
    >>> open_sealed(ct, coord, info=b"run-1|site-a|nonce")
    b'secret'
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import DecryptionError, KeyFileError, VerificationError

SIGNATURE_DOMAIN = b"feddistill/bundle-signature/v1\x00"
SIGNATURE_BYTES = 64


class HpkeSuite(StrEnum):
    """The HPKE KEM of the coordinator's key (KDF HKDF-SHA256 and AEAD AES-256-GCM in both)."""

    X25519 = "x25519"
    MLKEM768_X25519 = "mlkem768-x25519"


HPKE_SUITE_NAMES = {
    HpkeSuite.X25519: "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM",
    HpkeSuite.MLKEM768_X25519: "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM",
}
HPKE_SUITE_NAME = HPKE_SUITE_NAMES[HpkeSuite.X25519]
_SUITES = {
    HpkeSuite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    HpkeSuite.MLKEM768_X25519: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}

SigningKey = Ed25519PrivateKey
VerifyKey = Ed25519PublicKey
NodeKey = ec.EllipticCurvePrivateKey
NodePublicKey = ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class RecipientPublicKey:
    """The coordinator's HPKE public key: X25519, plus ML-KEM-768 for the hybrid suite."""

    x25519: X25519PublicKey
    mlkem: mlkem.MLKEM768PublicKey | None = None

    @property
    def suite(self) -> HpkeSuite:
        return HpkeSuite.X25519 if self.mlkem is None else HpkeSuite.MLKEM768_X25519

    def raw_bytes(self) -> bytes:
        """X25519 raw bytes, then ML-KEM-768 raw bytes for the hybrid (what the fingerprint hashes)."""
        raw = self.x25519.public_bytes_raw()
        return raw if self.mlkem is None else raw + self.mlkem.public_bytes_raw()

    def _hpke(self) -> X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        return self.x25519 if self.mlkem is None else hpke.MLKEM768X25519PublicKey(self.mlkem, self.x25519)


@dataclass(frozen=True)
class RecipientKey:
    """The coordinator's HPKE private key (see :class:`RecipientPublicKey`)."""

    x25519: X25519PrivateKey
    mlkem: mlkem.MLKEM768PrivateKey | None = None

    @property
    def suite(self) -> HpkeSuite:
        return HpkeSuite.X25519 if self.mlkem is None else HpkeSuite.MLKEM768_X25519

    def public_key(self) -> RecipientPublicKey:
        return RecipientPublicKey(self.x25519.public_key(), None if self.mlkem is None else self.mlkem.public_key())

    def _hpke(self) -> X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        return self.x25519 if self.mlkem is None else hpke.MLKEM768X25519PrivateKey(self.mlkem, self.x25519)


__all__ = [
    "HPKE_SUITE_NAME",
    "HPKE_SUITE_NAMES",
    "SIGNATURE_BYTES",
    "CertificateAuthority",
    "HpkeSuite",
    "NodeKey",
    "NodePublicKey",
    "RecipientKey",
    "RecipientPublicKey",
    "SigningKey",
    "VerifyKey",
    "certificate_fingerprint",
    "certificate_names",
    "check_key_matches_certificate",
    "fingerprint",
    "generate_node_key",
    "generate_recipient_key",
    "generate_signing_key",
    "issue_server_certificate",
    "load_certificate",
    "load_certificate_authority",
    "load_node_private_key",
    "load_node_public_key",
    "load_private_key",
    "load_public_key",
    "new_certificate_authority",
    "node_key_fingerprint",
    "node_key_from_spki",
    "node_key_to_spki",
    "open_sealed",
    "save_certificate",
    "save_node_key",
    "save_private_key",
    "save_public_key",
    "save_tls_private_key",
    "seal",
    "sign",
    "verify",
]


def generate_signing_key() -> SigningKey:
    """A new Ed25519 key for signing bundles (one per site)."""
    return Ed25519PrivateKey.generate()


def generate_recipient_key(suite: HpkeSuite = HpkeSuite.X25519) -> RecipientKey:
    """A new HPKE key pair for receiving sealed bundles (the coordinator's), for ``suite``."""
    hybrid = mlkem.MLKEM768PrivateKey.generate() if suite == HpkeSuite.MLKEM768_X25519 else None
    return RecipientKey(X25519PrivateKey.generate(), hybrid)


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
    """HPKE-encrypt ``plaintext`` to ``recipient`` (with its suite), ``info`` bound into the key schedule."""
    return _SUITES[recipient.suite].encrypt(plaintext, recipient._hpke(), info=info)


def open_sealed(ciphertext: bytes, key: RecipientKey, info: bytes) -> bytes:
    """Decrypt what :func:`seal` produced, with the suite of ``key``.

    Raises:
        DecryptionError: wrong key, altered ciphertext, or ``info`` differs from the sealer's.
    """
    try:
        return _SUITES[key.suite].decrypt(ciphertext, key._hpke(), info=info)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError(
            "bundle does not decrypt with this coordinator's key and its header "
            "(tampered ciphertext or header, or sealed to another key)"
        ) from exc


def fingerprint(public_key: VerifyKey | RecipientPublicKey) -> str:
    """SHA-256 of the raw public key bytes, hex: short enough to compare over the phone."""
    if isinstance(public_key, RecipientPublicKey):
        return hashlib.sha256(public_key.raw_bytes()).hexdigest()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----\s*", re.DOTALL)
_PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
_SPKI = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_private_key(key: SigningKey | RecipientKey, path: Path) -> None:
    """Write a private key as unencrypted PKCS#8 PEM (two blocks for a hybrid HPKE key), owner-only (0600)."""
    if isinstance(key, RecipientKey):
        pem = key.x25519.private_bytes(*_PKCS8) + (b"" if key.mlkem is None else key.mlkem.private_bytes(*_PKCS8))
    else:
        pem = key.private_bytes(*_PKCS8)
    _write_private(path, pem)


def save_public_key(public_key: VerifyKey | RecipientPublicKey, path: Path) -> None:
    """Write a public key as SubjectPublicKeyInfo PEM (two blocks for a hybrid HPKE key)."""
    if isinstance(public_key, RecipientPublicKey):
        pem = public_key.x25519.public_bytes(*_SPKI)
        pem += b"" if public_key.mlkem is None else public_key.mlkem.public_bytes(*_SPKI)
    else:
        pem = public_key.public_bytes(*_SPKI)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def load_private_key(path: Path, kind: type[SigningKey | RecipientKey]) -> SigningKey | RecipientKey:
    """Read a PEM private key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    keys = [_parse(block, path, "private") for block in _pem_blocks(path, "private")]
    if kind is RecipientKey:
        return RecipientKey(*_recipient_parts(keys, X25519PrivateKey, mlkem.MLKEM768PrivateKey, path, "private"))
    if len(keys) != 1 or not isinstance(keys[0], kind):
        raise KeyFileError(f"private key file {path.name!r} holds a {type(keys[0]).__name__}, not {kind.__name__}")
    return keys[0]


def load_public_key(
    path: Path, kind: type[VerifyKey | RecipientPublicKey]
) -> VerifyKey | RecipientPublicKey:
    """Read a PEM public key and check that it is of the expected kind.

    Raises:
        KeyFileError: the file is missing, unreadable, or holds another kind of key.
    """
    keys = [_parse(block, path, "public") for block in _pem_blocks(path, "public")]
    if kind is RecipientPublicKey:
        return RecipientPublicKey(*_recipient_parts(keys, X25519PublicKey, mlkem.MLKEM768PublicKey, path, "public"))
    if len(keys) != 1 or not isinstance(keys[0], kind):
        raise KeyFileError(f"public key file {path.name!r} holds a {type(keys[0]).__name__}, not {kind.__name__}")
    return keys[0]


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


def _recipient_parts(keys: list[object], classic: type, hybrid: type, path: Path, what: str) -> tuple:
    """(X25519 key, ML-KEM key or None) from the PEM blocks of an HPKE key file."""
    if not isinstance(keys[0], classic):
        raise KeyFileError(f"{what} key file {path.name!r} holds a {type(keys[0]).__name__}, not {classic.__name__}")
    if len(keys) == 1:
        return keys[0], None
    if len(keys) == 2 and isinstance(keys[1], hybrid):
        return keys[0], keys[1]
    raise KeyFileError(f"{what} key file {path.name!r} is neither an X25519 nor an MLKEM768-X25519 HPKE key")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


# SuperNode authentication keys (Flower's node auth: ECDSA on a NIST curve, OpenSSH format).


def generate_node_key() -> NodeKey:
    """A new ECDSA P-384 key for Flower SuperNode authentication."""
    return ec.generate_private_key(ec.SECP384R1())


def save_node_key(key: NodeKey, private_path: Path, public_path: Path) -> None:
    """Write the OpenSSH private key (0600) and the one-line OpenSSH public key Flower registers."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    _write_private(private_path, pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_path.write_bytes(public + b"\n")


def load_node_private_key(path: Path) -> NodeKey:
    """Read an OpenSSH SuperNode private key.

    Raises:
        KeyFileError: missing, unreadable, or not ECDSA on a NIST curve (what Flower accepts).
    """
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise KeyFileError(f"SuperNode key file {path.name!r} not found") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"SuperNode key file {path.name!r} is not an unencrypted OpenSSH private key") from exc
    return _nist_ec(key, path)


def load_node_public_key(path: Path) -> NodePublicKey:
    """Read an OpenSSH SuperNode public key (``ecdsa-sha2-nistp384 AAAA...``).

    Raises:
        KeyFileError: missing, unreadable, or not ECDSA on a NIST curve.
    """
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyFileError(f"SuperNode public key file {path.name!r} not found") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"SuperNode public key file {path.name!r} is not an OpenSSH public key") from exc
    return _nist_ec(key, path)


def node_key_to_spki(public_key: NodePublicKey) -> bytes:
    """A SuperNode key in the form Flower stores and reports it (SubjectPublicKeyInfo PEM)."""
    return public_key.public_bytes(*_SPKI)


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


def _nist_ec(key: object, path: Path):
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or key.curve.name not in (
        "secp256r1", "secp384r1", "secp521r1"
    ):
        raise KeyFileError(f"SuperNode key file {path.name!r} is not ECDSA on a NIST curve (Flower rejects it)")
    return key


# TLS for the SuperLink: a study CA and the server certificate it issues.

_CERT_DAYS = 825


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def new_certificate_authority(common_name: str, days: int = 3650) -> CertificateAuthority:
    """A self-signed ECDSA P-384 CA that signs only certificates (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return CertificateAuthority(key, cert)


def issue_server_certificate(
    ca: CertificateAuthority, names: Sequence[str], days: int = _CERT_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server key and certificate for ``names`` (DNS names or IP addresses, all in the SAN)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA384())
    )
    return key, cert


def save_certificate(cert: x509.Certificate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def save_tls_private_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """PKCS#8 PEM, owner-only (0600): what uvicorn's ``--ssl-keyfile`` reads."""
    _write_private(path, key.private_bytes(*_PKCS8))


def load_certificate_authority(cert_path: Path, key_path: Path) -> CertificateAuthority:
    """Read the study CA written by :func:`new_certificate_authority`.

    Raises:
        KeyFileError: missing or unreadable files, or a key that does not belong to the certificate.
    """
    cert = load_certificate(cert_path)
    key = _load_tls_key(key_path)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise KeyFileError(f"CA key {key_path.name!r} does not belong to certificate {cert_path.name!r}")
    return CertificateAuthority(key, cert)


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate.

    Raises:
        KeyFileError: missing or not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyFileError(f"certificate file {path.name!r} not found") from exc
    except ValueError as exc:
        raise KeyFileError(f"certificate file {path.name!r} is not a PEM certificate") from exc


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in a certificate's subjectAltName (empty if it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def check_key_matches_certificate(cert_path: Path, key_path: Path) -> None:
    """Check that a TLS private key belongs to a certificate.

    Raises:
        KeyFileError: unreadable files, or the key is not the certificate's.
    """
    cert, key = load_certificate(cert_path), _load_tls_key(key_path, any_kind=True)
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise KeyFileError(f"TLS key {key_path.name!r} does not belong to certificate {cert_path.name!r}")


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _load_tls_key(path: Path, any_kind: bool = False):
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise KeyFileError(f"TLS key file {path.name!r} not found") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"TLS key file {path.name!r} is not an unencrypted PEM private key") from exc
    if not any_kind and not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"TLS key file {path.name!r} is not an EC key")
    return key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
