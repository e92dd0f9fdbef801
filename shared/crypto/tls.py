"""TLS for the SuperLink: a small study CA (ECDSA P-384) that issues the server certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.crypto.key_files import PKCS8, SPKI, read_key_file, write_private, write_public
from shared.errors import KeyFileError

_CERT_DAYS = 825


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    """A KeyUsage extension with only the named uses set (the others are never wanted here)."""
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


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
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
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
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA384())
    )
    return key, cert


def save_certificate(cert: x509.Certificate, path: Path) -> None:
    write_public(path, cert.public_bytes(serialization.Encoding.PEM))


def save_tls_private_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """PKCS#8 PEM, owner-only (0600): what uvicorn's ``--ssl-keyfile`` reads."""
    write_private(path, key.private_bytes(*PKCS8))


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
    return read_key_file(path, "certificate", x509.load_pem_x509_certificate, "is not a PEM certificate")


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
    cert, key = load_certificate(cert_path), _load_tls_key(key_path, any_kind=True, ours=False)
    if key.public_key().public_bytes(*SPKI) != cert.public_key().public_bytes(*SPKI):
        raise KeyFileError(f"TLS key {key_path.name!r} does not belong to certificate {cert_path.name!r}")


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _load_tls_key(path: Path, any_kind: bool = False, ours: bool = True):
    """A TLS private key; ``ours=False``: an operator's own key at a path they name (a link is fine: certbot's are)."""
    key = read_key_file(path, "TLS key", lambda data: serialization.load_pem_private_key(data, password=None),
                        "is not an unencrypted PEM private key", private=ours)
    if not any_kind and not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"TLS key file {path.name!r} is not an EC key")
    return key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
