"""Deployment key material: site identity, SuperNode keys, the hybrid HPKE suite, the SuperLink certificate."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from coordinator.receive import Expectation, receive_bundle
from coordinator.tls import install_own_tls, issue_tls
from coordinator.trust import CoordinatorKeys
from shared import crypto
from shared.bundle import SealedBundle
from shared.datasets import dataset_info
from shared.errors import DecryptionError, KeyFileError
from shared.keys import NODE_KEY, NODE_PUB, SIGNING_KEY, create_site_identity
from site_agent.identity import SiteIdentity
from site_agent.release import seal_release
from tests.conftest import make_request, make_synthetic


def test_site_identity_has_both_keys_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    """init writes an Ed25519 signing key and an ECDSA P-384 OpenSSH node key, 0600, and refuses a second time."""
    signing, node, created = create_site_identity(tmp_path)
    assert created == [SIGNING_KEY, NODE_KEY]
    for name in (SIGNING_KEY, NODE_KEY):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert (tmp_path / NODE_KEY).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (tmp_path / NODE_PUB).read_text().startswith("ecdsa-sha2-nistp384 ")
    loaded = crypto.load_node_private_key(tmp_path / NODE_KEY)
    assert loaded.curve.name == "secp384r1"
    assert crypto.node_key_fingerprint(crypto.load_node_public_key(tmp_path / NODE_PUB)) == crypto.node_key_fingerprint(node)
    assert crypto.node_key_fingerprint(node).startswith("SHA256:") and len(crypto.fingerprint(signing)) == 64
    with pytest.raises(KeyFileError, match="already holds"):
        create_site_identity(tmp_path)


def test_missing_node_key_is_added_to_an_existing_site(tmp_path: Path) -> None:
    """A site made before node keys existed gets only the node key; its signing key is kept."""
    first, _, _ = create_site_identity(tmp_path)
    (tmp_path / NODE_KEY).unlink()
    again, _, created = create_site_identity(tmp_path)
    assert created == [NODE_KEY] and crypto.fingerprint(again) == crypto.fingerprint(first)


def test_node_key_loader_refuses_other_kinds(tmp_path: Path) -> None:
    """An Ed25519 or PEM file is not a SuperNode key (Flower wants ECDSA on a NIST curve, OpenSSH)."""
    crypto.save_private_key(crypto.generate_signing_key(), tmp_path / "signing.key")
    with pytest.raises(KeyFileError, match="OpenSSH"):
        crypto.load_node_private_key(tmp_path / "signing.key")
    with pytest.raises(KeyFileError, match="not found"):
        crypto.load_node_public_key(tmp_path / "nothing.pub")


@pytest.mark.parametrize("suite", list(crypto.HpkeSuite))
def test_bundle_is_sealed_with_the_suite_of_the_pinned_key(tmp_path: Path, suite: crypto.HpkeSuite) -> None:
    """A site seals with its pinned key's suite, the header records it, and the coordinator opens accordingly."""
    coordinator = crypto.generate_recipient_key(suite)
    crypto.save_private_key(coordinator, tmp_path / "c.key")
    crypto.save_public_key(coordinator.public_key(), tmp_path / "c.pub")
    reloaded = crypto.load_private_key(tmp_path / "c.key", crypto.RecipientKey)
    pinned = crypto.load_public_key(tmp_path / "c.pub", crypto.RecipientPublicKey)
    assert reloaded.suite == pinned.suite == suite
    signing = crypto.generate_signing_key()
    request = make_request()
    sealed = seal_release(make_synthetic(request), request, SiteIdentity("site-0", signing, pinned),
                          dataset_info("breastmnist"), num_real_examples=10)
    assert SealedBundle.from_bytes(sealed).header.suite == crypto.HPKE_SUITE_NAMES[suite]
    keys = CoordinatorKeys(reloaded, {"site-0": signing.public_key()})
    opened = receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), keys, set())
    assert np.array_equal(opened.labels, [0, 0, 1, 1])


def test_coordinator_with_the_other_suite_refuses_clearly() -> None:
    """A hybrid-sealed bundle at an X25519 coordinator fails with the suite named, not a bare decryption error."""
    hybrid, classic = crypto.generate_recipient_key(crypto.HpkeSuite.MLKEM768_X25519), crypto.generate_recipient_key()
    signing = crypto.generate_signing_key()
    request = make_request()
    sealed = seal_release(make_synthetic(request), request, SiteIdentity("site-0", signing, hybrid.public_key()),
                          dataset_info("breastmnist"), num_real_examples=10)
    keys = CoordinatorKeys(classic, {"site-0": signing.public_key()})
    with pytest.raises(DecryptionError, match="MLKEM768-X25519.*x25519"):
        receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), keys, set())


def test_issued_certificate_names_the_study_addresses_and_loopback(tmp_path: Path) -> None:
    """The SuperLink certificate carries the given names plus 127.0.0.1 and localhost, signed by the study CA."""
    files = issue_tls(tmp_path, ["link.example.org", "10.0.0.5"])
    cert = crypto.load_certificate(files.server_cert)
    assert crypto.certificate_names(cert) == ["link.example.org", "localhost", "10.0.0.5", "127.0.0.1"]
    ca = crypto.load_certificate(files.ca_cert)
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600
    crypto.check_key_matches_certificate(files.server_cert, files.server_key)
    again = issue_tls(tmp_path, ["other.example.org"])  # re-issue: same CA, new names
    crypto.load_certificate(again.server_cert).verify_directly_issued_by(ca)


def test_operator_certificate_without_loopback_or_with_a_foreign_key_is_refused(tmp_path: Path) -> None:
    """An operator's own certificate must name 127.0.0.1 and localhost, and come with its own key."""
    ca = crypto.new_certificate_authority("their CA")
    key, cert = crypto.issue_server_certificate(ca, ["link.example.org"])
    crypto.save_certificate(cert, tmp_path / "s.crt")
    crypto.save_tls_private_key(key, tmp_path / "s.key")
    with pytest.raises(KeyFileError, match="lacks 127.0.0.1, localhost"):
        install_own_tls(tmp_path / "keys", tmp_path / "s.crt", tmp_path / "s.key", None)
    good_key, good = crypto.issue_server_certificate(ca, ["link.example.org", "127.0.0.1", "localhost"])
    crypto.save_certificate(good, tmp_path / "g.crt")
    with pytest.raises(KeyFileError, match="does not belong"):
        install_own_tls(tmp_path / "keys", tmp_path / "g.crt", tmp_path / "s.key", None)
    crypto.save_tls_private_key(good_key, tmp_path / "g.key")
    files = install_own_tls(tmp_path / "keys", tmp_path / "g.crt", tmp_path / "g.key", None)
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600 and not files.ca_cert.exists()
