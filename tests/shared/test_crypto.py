"""Signatures, HPKE sealing, key files and certificates."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from shared import crypto
from shared.errors import DecryptionError, KeyFileError, VerificationError


def test_seal_open_round_trip() -> None:
    """What is sealed with an info opens with the same key and info."""
    key = crypto.generate_recipient_key()
    assert crypto.open_sealed(crypto.seal(b"payload", key.public_key(), b"i"), key, b"i") == b"payload"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda ct, info, key: (ct[:-1] + bytes([ct[-1] ^ 1]), info, key),
        lambda ct, info, key: (ct, info + b"x", key),
        lambda ct, info, key: (ct, info, crypto.generate_recipient_key()),
        lambda ct, info, key: (ct[:10], info, key),
    ],
    ids=["flipped-byte", "other-info", "other-key", "truncated"],
)
def test_open_refuses_tampering(tamper) -> None:
    """Any change to ciphertext, info or key fails with DecryptionError."""
    key = crypto.generate_recipient_key()
    ct = crypto.seal(b"payload", key.public_key(), b"info")
    with pytest.raises(DecryptionError):
        ct, info, key = tamper(ct, b"info", key)
        crypto.open_sealed(ct, key, info)


def test_signature_binds_key_and_message() -> None:
    """A signature verifies only for its own key and message."""
    key = crypto.generate_signing_key()
    sig = crypto.sign(key, b"m")
    crypto.verify(key.public_key(), b"m", sig)
    with pytest.raises(VerificationError):
        crypto.verify(key.public_key(), b"n", sig)
    with pytest.raises(VerificationError):
        crypto.verify(crypto.generate_signing_key().public_key(), b"m", sig)


def test_private_keys_are_owner_only_and_typed(tmp_path) -> None:
    """Private key files are 0600, and loading checks the kind of key."""
    path = tmp_path / "k.key"
    crypto.save_private_key(crypto.generate_signing_key(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(crypto.load_private_key(path, crypto.SigningKey), crypto.SigningKey)
    with pytest.raises(KeyFileError, match="not X25519PrivateKey"):
        crypto.load_private_key(path, crypto.RecipientKey)
    with pytest.raises(KeyFileError, match="not found"):
        crypto.load_private_key(tmp_path / "missing.key", crypto.SigningKey)
    (tmp_path / "junk.key").write_text("not a key")
    (tmp_path / "junk.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="not a readable PEM"):
        crypto.load_private_key(tmp_path / "junk.key", crypto.SigningKey)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_private_key_open_to_other_users_is_refused_with_the_fix(tmp_path, mode: int) -> None:
    """As ssh does: a key others may read (or write) is not used, and the message says how to fix it."""
    path = tmp_path / "signing.key"
    crypto.save_private_key(crypto.generate_signing_key(), path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=rf"mode {mode:04o}.*chmod 600"):
        crypto.load_private_key(path, crypto.SigningKey)
    node = tmp_path / "node.key"
    crypto.save_node_key(crypto.generate_node_key(), node, tmp_path / "node.pub")
    node.chmod(mode)
    with pytest.raises(KeyFileError, match="open to other users"):
        crypto.load_node_private_key(node)


def test_a_private_key_reached_through_a_link_is_refused(tmp_path) -> None:
    real = tmp_path / "elsewhere.key"
    crypto.save_private_key(crypto.generate_signing_key(), real)
    (tmp_path / "signing.key").symlink_to(real)
    with pytest.raises(KeyFileError, match="symbolic link"):
        crypto.load_private_key(tmp_path / "signing.key", crypto.SigningKey)


def test_writing_a_key_replaces_a_planted_link_and_never_writes_through_it(tmp_path) -> None:
    """A link at a new key's path neither redirects the key nor overwrites the file it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("signing.key", "signing.pub"):
        (keys / name).symlink_to(victim)
    key = crypto.generate_signing_key()
    crypto.save_private_key(key, keys / "signing.key")
    crypto.save_public_key(key.public_key(), keys / "signing.pub")
    assert victim.read_text() == "precious"
    assert not (keys / "signing.key").is_symlink() and stat.S_IMODE((keys / "signing.key").stat().st_mode) == 0o600
    assert crypto.load_private_key(keys / "signing.key", crypto.SigningKey).public_key() == key.public_key()
    assert [p.name for p in keys.iterdir()] == sorted(["signing.key", "signing.pub"]) or len(list(keys.iterdir())) == 2


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_key_folder_other_users_may_write_to_is_refused(tmp_path, mode: int) -> None:
    """They could swap the key after it is written; nothing is written there."""
    keys = tmp_path / "keys"
    keys.mkdir()
    keys.chmod(mode)
    with pytest.raises(KeyFileError, match=rf"writable by other users \(mode {mode:04o}\).*chmod 700"):
        crypto.save_private_key(crypto.generate_signing_key(), keys / "signing.key")
    assert list(keys.iterdir()) == []


def test_certificates_carry_only_their_key_usages() -> None:
    """The study CA signs certificates and CRLs only; the server key signs and enciphers only."""
    from cryptography import x509

    ca = crypto.new_certificate_authority("study CA")
    _, server = crypto.issue_server_certificate(ca, ["link.example.org"])
    uses = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
            "key_cert_sign", "crl_sign")
    for cert, wanted in ((ca.certificate, {"key_cert_sign", "crl_sign"}),
                         (server, {"digital_signature", "key_encipherment"})):
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert {name for name in uses if getattr(usage, name)} == wanted


def test_only_the_crypto_package_imports_cryptography() -> None:
    """Every use of ``cryptography`` goes through ``shared.crypto``."""
    root = Path(__file__).resolve().parents[2]
    importers = {
        path.relative_to(root).as_posix()
        for package in ("shared", "site_agent", "coordinator")
        for path in (root / package).rglob("*.py")
        if re.search(r"^\s*(from|import) cryptography\b", path.read_text(), re.MULTILINE)
    }
    assert importers and all(name.startswith("shared/crypto/") for name in importers)


def test_an_openssh_key_with_a_compressed_point_is_a_key_file_error(tmp_path) -> None:
    """Found by tests/test_fuzz_doors.py: cryptography raises NotImplementedError for it, which escaped."""
    import base64
    import struct

    def ssh_string(value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value

    blob = ssh_string(b"ecdsa-sha2-nistp384") + ssh_string(b"nistp384") + ssh_string(b"\x02" + b"\x11" * 48)
    (tmp_path / "node.pub").write_bytes(b"ecdsa-sha2-nistp384 " + base64.b64encode(blob) + b"\n")
    with pytest.raises(KeyFileError, match="SuperNode public key file is not an OpenSSH public key") as info:
        crypto.load_node_public_key(tmp_path / "node.pub")
    assert "node.pub" in info.value.local_detail


def _loosened(keys: Path) -> Path:
    crypto.save_private_key(crypto.generate_signing_key(), keys / "signing.key")
    (keys / "signing.key").chmod(0o644)  # after `join` started: the site now refuses every request with this
    return keys / "signing.key"


def _linked(keys: Path) -> Path:
    crypto.save_private_key(crypto.generate_signing_key(), keys / "real.key")
    (keys / "signing.key").symlink_to(keys / "real.key")
    return keys / "signing.key"


def _junk(keys: Path) -> Path:
    (keys / "signing.key").write_text("not a key")
    (keys / "signing.key").chmod(0o600)
    return keys / "signing.key"


def _another_kind(keys: Path) -> Path:
    crypto.save_public_key(crypto.generate_signing_key().public_key(), keys / "coordinator.pub")
    return keys / "coordinator.pub"


@pytest.mark.parametrize(("make", "kind", "named"), [
    (_loosened, crypto.SigningKey, "signing key file is open to other users"),
    (lambda keys: keys / "signing.key", crypto.SigningKey, "signing key file not found"),
    (_linked, crypto.SigningKey, "signing key file is a symbolic link"),
    (_junk, crypto.SigningKey, "signing key file is not a readable PEM key"),
    (_another_kind, crypto.RecipientPublicKey, "coordinator public key file holds a Ed25519PublicKey"),
], ids=["mode-loosened", "missing", "link", "junk", "another-kind"])
def test_key_file_errors_name_the_kind_of_key_never_the_file(tmp_path: Path, make, kind, named: str) -> None:
    """A site loads its keys for every request and its error travels to the coordinator: the message names the
    kind of key, only ``local_detail`` (the site's own) names the file and its folder."""
    keys = tmp_path / "ward-7-keys"
    keys.mkdir(mode=0o700)
    path = make(keys)
    load = crypto.load_private_key if kind in (crypto.SigningKey, crypto.RecipientKey) else crypto.load_public_key
    with pytest.raises(KeyFileError, match=named) as info:
        load(path, kind)
    sent = str(info.value)
    assert "ward-7-keys" not in sent and path.name not in sent and "/" not in sent
    assert str(path) in info.value.local_detail and str(path) in info.value.diagnostics()


def test_a_loosened_key_says_how_to_fix_it_locally(tmp_path: Path) -> None:
    """The fix, with the file's path, is in the local detail the site's command line prints."""
    path = _loosened(tmp_path)
    with pytest.raises(KeyFileError, match=r"mode 0644.*chmod 600") as info:
        crypto.load_private_key(path, crypto.SigningKey)
    assert f"chmod 600 {path}" in info.value.local_detail
