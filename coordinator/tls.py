"""The SuperLink's TLS certificate: issued by a small study CA, or the operator's own.

The certificate must name every address the SuperNodes dial **and** ``127.0.0.1`` and ``localhost``:
Flower's SuperExec and ServerApp processes reach the Runtime API on the same port through
127.0.0.1, and fail the TLS check without them. Both are always added to an issued certificate, and
an operator's certificate without them is refused with that reason.

Files (``shared.keys``): ``<key-dir>/tls/{ca.crt, ca.key, server.crt, server.key}``. ``ca.crt`` goes
to every site (``site-agent join --root-certificates``); ``ca.key`` never leaves the coordinator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared import crypto
from shared.errors import KeyFileError
from shared.keys import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, TLS

ALWAYS_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Where the SuperLink's TLS material lives."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_keys_dir(cls, keys_dir: Path) -> TlsFiles:
        tls = keys_dir / TLS
        return cls(tls / CA_CERT, tls / SERVER_CERT, tls / SERVER_KEY)


def server_names(extra: Sequence[str]) -> list[str]:
    """The SAN list: the operator's names first (the first becomes the CN), then 127.0.0.1 and localhost."""
    names = [n.strip() for n in extra if n.strip()]
    return list(dict.fromkeys([*names, *ALWAYS_NAMES]))


def issue_tls(keys_dir: Path, names: Sequence[str], study: str = "feddistill study CA") -> TlsFiles:
    """Issue (or re-issue, for new names) the SuperLink certificate from the study CA, creating the CA if needed."""
    files = TlsFiles.in_keys_dir(keys_dir)
    ca_key = files.ca_cert.parent / CA_KEY
    if files.ca_cert.exists():
        ca = crypto.load_certificate_authority(files.ca_cert, ca_key)
    else:
        ca = crypto.new_certificate_authority(study)
        crypto.save_tls_private_key(ca.key, ca_key)
        crypto.save_certificate(ca.certificate, files.ca_cert)
    key, cert = crypto.issue_server_certificate(ca, server_names(names))
    crypto.save_tls_private_key(key, files.server_key)
    crypto.save_certificate(cert, files.server_cert)
    return files


def install_own_tls(keys_dir: Path, cert: Path, key: Path, ca_cert: Path | None) -> TlsFiles:
    """Use the operator's certificate and key (and the CA the sites should trust, if not a public one).

    Raises:
        KeyFileError: unreadable files, a key that is not the certificate's, or a certificate whose
            subjectAltName lacks 127.0.0.1 or localhost.
    """
    crypto.check_key_matches_certificate(cert, key)
    names = crypto.certificate_names(crypto.load_certificate(cert))
    missing = [n for n in ALWAYS_NAMES if n not in names]
    if missing:
        raise KeyFileError(
            f"TLS certificate {cert.name!r} lacks {', '.join(missing)} in its subjectAltName",
            hint="Flower's own processes reach the SuperLink through 127.0.0.1; re-issue the certificate with "
            "127.0.0.1 and localhost, or let `coordinator init --san <name>` issue one",
        )
    files = TlsFiles.in_keys_dir(keys_dir)
    crypto.write_public(files.server_cert, cert.read_bytes())
    crypto.write_private(files.server_key, key.read_bytes())
    if ca_cert is not None:
        crypto.load_certificate(ca_cert)
        crypto.write_public(files.ca_cert, ca_cert.read_bytes())
    return files


def check_tls(keys_dir: Path) -> TlsFiles:
    """The TLS files the SuperLink will use, checked to exist and belong together.

    Raises:
        KeyFileError: missing files or a key that is not the certificate's.
    """
    files = TlsFiles.in_keys_dir(keys_dir)
    if not files.server_cert.exists():
        raise KeyFileError("the SuperLink has no TLS certificate yet",
                           hint=f"run `coordinator init --key-dir {keys_dir} --san <the address sites dial>`")
    crypto.check_key_matches_certificate(files.server_cert, files.server_key)
    return files
