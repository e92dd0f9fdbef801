"""The sealed bundle on its own: it round-trips exactly, and every edit, truncation or bad manifest is refused."""

from __future__ import annotations

import numpy as np
import pytest

from shared import crypto
from shared.bundle import (
    MAGIC,
    BundleHeader,
    SealedBundle,
    decode_payload,
    encode_payload,
    hpke_info,
    open_bundle,
    payload_info,
    seal_bundle,
)
from shared.errors import DecryptionError, InvalidBundle, VerificationError
from shared.manifest import BundleManifest
from shared.methods import DCConfig, SoftLabelSpec
from tests.conftest import edit_header

SITE = crypto.generate_signing_key()
COORDINATOR = crypto.generate_recipient_key()
MAX_BYTES = 1 << 20
LABELS = np.array([0, 0, 1, 1], np.int64)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float16).astype(np.float32)


def _manifest(data: bytes, **changes) -> BundleManifest:
    values = {
        "site_id": "site-0", "run_id": "run-1", "nonce": "ab" * 32,
        "recipient_fingerprint": crypto.fingerprint(COORDINATOR.public_key()), "dataset": "breastmnist",
        "task": "binary-class", "image_shape": (1, 28, 28), "num_classes": 2, "label_set": [0, 1],
        "class_counts": {0: 2, 1: 2}, "num_real_examples": 100, "distill": DCConfig(ipc=2, iterations=1),
        "software": {"feddistill": "test"}, "created_at": "2026-01-01T00:00:00+00:00",
        "payload": payload_info(data, count=len(LABELS)),
    }
    return BundleManifest(**{**values, **changes})


def _sealed(**changes) -> bytes:
    """A bundle signed by SITE and sealed to COORDINATOR, its manifest changed by ``changes``."""
    payload = encode_payload(IMAGES, LABELS)
    return seal_bundle(_manifest(payload, **changes), payload, SITE, COORDINATOR.public_key())


def _open(sealed: bytes):
    return open_bundle(sealed, COORDINATOR, lambda site_id: SITE.public_key(), MAX_BYTES)


def _sealed_with_header(signed: bytes, header: BundleHeader) -> bytes:
    """``signed`` sealed under ``header``, as a sender who controls both would write it."""
    header_bytes = header.model_dump_json().encode()
    ciphertext = crypto.seal(signed, COORDINATOR.public_key(), info=hpke_info(header_bytes))
    return MAGIC + len(header_bytes).to_bytes(4, "big") + header_bytes + ciphertext


def _signed(manifest_bytes: bytes, payload: bytes) -> bytes:
    """u32 manifest length | manifest | payload, then the site's signature over them."""
    return _with_signature(len(manifest_bytes).to_bytes(4, "big") + manifest_bytes + payload)


def _with_signature(signed_part: bytes) -> bytes:
    return signed_part + crypto.sign(SITE, signed_part)


def test_payload_round_trips_and_refuses_other_shapes() -> None:
    """float16-exact images and labels come back bit for bit; a wrong shape or length is refused."""
    payload = encode_payload(IMAGES, LABELS)
    images, labels, soft = decode_payload(payload, (1, 28, 28), 4)
    assert images.dtype == np.float32 and labels.dtype == np.int64 and soft is None
    assert np.array_equal(images, IMAGES) and np.array_equal(labels, LABELS)
    with pytest.raises(ValueError, match="must be"):
        encode_payload(IMAGES[0], LABELS)
    with pytest.raises(InvalidBundle, match="expected"):
        decode_payload(payload[:-1], (1, 28, 28), 4)


SOFT = np.array([[0.9, 0.1], [0.6, 0.4], [0.25, 0.75], [0.0, 1.0]], np.float32)


def _sealed_soft(soft: np.ndarray, **changes) -> bytes:
    """A bundle whose manifest names soft labels and whose payload carries ``soft``, signed by SITE."""
    payload = encode_payload(IMAGES, LABELS, soft)
    manifest = _manifest(payload, soft_labels=SoftLabelSpec(), **changes)
    return seal_bundle(manifest, payload, SITE, COORDINATOR.public_key())


def test_soft_labels_round_trip_inside_the_signature() -> None:
    """A set with soft labels opens with them, each row a probability vector; a payload the manifest says has
    none, or the other way round, is refused as the wrong size."""
    opened = _open(_sealed_soft(SOFT))
    assert opened.soft_labels is not None and opened.soft_labels.dtype == np.float32
    np.testing.assert_allclose(opened.soft_labels, SOFT, atol=1e-3)
    np.testing.assert_allclose(opened.soft_labels.sum(1), 1, atol=1e-6)
    assert _open(_sealed()).soft_labels is None
    without = encode_payload(IMAGES, LABELS)
    with pytest.raises(InvalidBundle, match="does not hold"):  # soft labels named, none sent
        _open(seal_bundle(_manifest(without, soft_labels=SoftLabelSpec()), without, SITE, COORDINATOR.public_key()))
    with pytest.raises(ValueError, match="soft labels must be"):
        encode_payload(IMAGES, LABELS, SOFT[:3])


@pytest.mark.parametrize(
    ("soft", "match"),
    [
        (SOFT * 50, "must sum to 1"),  # a label that weighs 50 images: one site swamping the pool
        (np.array([[1.5, -0.5]] * 4, np.float32), "negative or non-finite"),
        (np.array([[np.nan, 1.0]] * 4, np.float32), "negative or non-finite"),
        (np.array([[np.inf, 0.0]] * 4, np.float32), "negative or non-finite"),
        (np.zeros((4, 2), np.float32), "must sum to 1"),
    ],
    ids=["scaled-up", "negative", "nan", "inf", "all-zero"],
)
def test_a_signed_soft_label_that_is_not_a_probability_is_refused(soft: np.ndarray, match: str) -> None:
    """A site's signature does not make its labels sane: a hostile site cannot weigh its images above the others'."""
    with pytest.raises(InvalidBundle, match=match):
        _open(_sealed_soft(soft))


def test_bundle_round_trips() -> None:
    """Sealed then opened: the same manifest, images and labels; the clear header repeats site, run and nonce."""
    sealed = _sealed()
    parsed = SealedBundle.from_bytes(sealed, MAX_BYTES)
    assert (parsed.header.site_id, parsed.header.run_id, parsed.header.nonce) == ("site-0", "run-1", "ab" * 32)
    assert parsed.total_bytes == len(sealed) and parsed.header.suite == crypto.HPKE_SUITE_NAME
    opened = _open(sealed)
    assert opened.manifest == _manifest(encode_payload(IMAGES, LABELS)) and opened.header == parsed.header
    assert np.array_equal(opened.images, IMAGES) and np.array_equal(opened.labels, LABELS)
    assert opened.sealed_bytes == len(sealed)


def _flip(sealed: bytes, index: int) -> bytes:
    return sealed[:index] + bytes([sealed[index] ^ 0x01]) + sealed[index + 1 :]


@pytest.mark.parametrize(
    ("tamper", "error", "match"),
    [
        (lambda s: _flip(s, len(s) - 1), DecryptionError, "does not decrypt"),
        (lambda s: _flip(s, len(s) // 2), DecryptionError, "does not decrypt"),
        (lambda s: edit_header(s, run_id="run-2"), DecryptionError, "does not decrypt"),
        (lambda s: edit_header(s, suite="MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"), DecryptionError, "HPKE suite"),
        (lambda s: s[:40], InvalidBundle, "out of bounds"),
        (lambda s: s[:7], InvalidBundle, "truncated before the header length"),
        (lambda s: b"GIF89a" + s, InvalidBundle, "magic"),
        (lambda s: s + b"\0" * MAX_BYTES, InvalidBundle, "over the limit"),
        (lambda s: MAGIC + (10**6).to_bytes(4, "big") + s[9:], InvalidBundle, "header length 1000000 is out of bounds"),
        (lambda s: MAGIC + (5).to_bytes(4, "big") + b"{bad}" + s[9:], InvalidBundle, "header is malformed"),
    ],
    ids=["last-byte", "middle-byte", "edited-header", "other-suite", "truncated", "no-length", "not-a-bundle",
         "oversize", "bad-length", "bad-header"],
)
def test_tampered_bundles_are_refused(tamper, error, match) -> None:
    """Flipped bytes, an edited header, truncation, junk and oversize input each fail with their own reason."""
    with pytest.raises(error, match=match):
        _open(tamper(_sealed()))


def test_wrong_site_key_and_unknown_site_are_refused() -> None:
    """The signature is checked against the key the caller names for the header's site."""
    other = crypto.generate_signing_key()
    with pytest.raises(VerificationError, match="signature"):
        open_bundle(_sealed(), COORDINATOR, lambda site_id: other.public_key(), MAX_BYTES)

    def unknown(site_id: str) -> crypto.VerifyKey:
        raise VerificationError(f"site {site_id!r} is not registered")

    with pytest.raises(VerificationError, match="'site-0' is not registered"):
        open_bundle(_sealed(), COORDINATOR, unknown, MAX_BYTES)


def test_bundle_sealed_to_another_coordinator_is_refused() -> None:
    """Another coordinator's key does not open it."""
    with pytest.raises(DecryptionError, match="does not decrypt"):
        open_bundle(_sealed(), crypto.generate_recipient_key(), lambda site_id: SITE.public_key(), MAX_BYTES)


_NBYTES = 4 * (2 * 784 + 2)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"image_shape": (-1, -28, 28)}, r"image_shape \(-1, -28, 28\) is out of bounds"),
        ({"image_shape": (1, 28, 0)}, "image_shape .* is out of bounds"),
        ({"image_shape": (1, 2**40, 2**40)}, "image_shape .* is out of bounds"),
        ({"image_shape": (3, 28, 28)}, "payload nbytes 6280 does not hold 4 images"),
        ({"num_classes": 10**6}, "num_classes 1000000 is over 1000"),
        ({"recipient_fingerprint": "00" * 32}, "another coordinator key"),
        ({"payload": {"count": 4, "sha256": "00" * 32, "nbytes": _NBYTES}}, "payload digest or size"),
    ],
    ids=["negative-shape", "zero-side", "huge-shape", "shape-and-size-disagree", "huge-classes", "other-recipient",
         "other-digest"],
)
def test_signed_manifest_that_does_not_hold_is_refused(changes: dict, match: str) -> None:
    """A validly signed manifest with a field out of bounds or inconsistent is an InvalidBundle, never numpy's error."""
    with pytest.raises(InvalidBundle, match=match):
        _open(_sealed(**changes))


def test_manifest_must_agree_with_the_header() -> None:
    """A header that names another site, run or nonce than the signed manifest is refused after decryption."""
    payload = encode_payload(IMAGES, LABELS)
    signed = _signed(_manifest(payload).model_dump_json().encode(), payload)
    for field, value in (("site_id", "site-1"), ("run_id", "run-2"), ("nonce", "cd" * 32)):
        header = BundleHeader(**{"site_id": "site-0", "run_id": "run-1", "nonce": "ab" * 32, field: value})
        with pytest.raises(InvalidBundle, match=f"manifest {field} does not match"):
            _open(_sealed_with_header(signed, header))


@pytest.mark.parametrize(
    ("signed", "match"),
    [
        (b"short", "shorter than a signature"),
        (_signed(b'{"site_id": 5}', b""), "manifest is malformed"),
        (_with_signature((10**7).to_bytes(4, "big") + b"{}"), "manifest length 10000000 is out of bounds"),
        (_with_signature(b"\0\0"), "truncated before the manifest length"),
    ],
    ids=["shorter-than-a-signature", "malformed-manifest", "manifest-length", "no-manifest-length"],
)
def test_malformed_signed_part_is_refused(signed: bytes, match: str) -> None:
    """What decrypts must still be a signed, well-formed manifest and payload."""
    header = BundleHeader(site_id="site-0", run_id="run-1", nonce="ab" * 32)
    with pytest.raises(InvalidBundle, match=match):
        _open(_sealed_with_header(signed, header))
