"""The bundle: how one site's synthetic set travels, sealed, from the site to the coordinator.

Wire format (all integers big-endian)::

    sealed bundle  = MAGIC (b"FDSB\\x01") | u32 header_len | header | ciphertext
    header         = JSON of BundleHeader: schema_version, suite, site_id, run_id, nonce
                     (suite: the HPKE suite of the pinned coordinator key, X25519 or MLKEM768-X25519)
    ciphertext     = HPKE seal of the signed bundle to the coordinator, info = b"feddistill/v1" | header
    signed bundle  = u32 manifest_len | manifest | payload | signature
    manifest       = JSON of manifest.BundleManifest (site, run, nonce, dataset, shapes, method, ...)
    payload        = images as float16 little-endian, shape (N, C, H, W), C order,
                     then labels as uint16 little-endian, shape (N,),
                     then, when the manifest names soft_labels, class probabilities as float16, shape (N, K)
    signature      = Ed25519 over (u32 manifest_len | manifest | payload), see shared.crypto

The header travels in clear so the coordinator knows which run, nonce and site key to check before
it decrypts. It is not trusted on its own: its exact bytes are bound into the HPKE info (an edited
header makes decryption fail) and the signed manifest repeats site, run and nonce, which must agree.
The manifest also names the fingerprint of the coordinator key the site sealed to, so a signed
bundle cannot be re-encrypted by someone else to a different coordinator.

Parse once, at the door: :meth:`SealedBundle.from_bytes` checks the size, the magic and the header
and gives a typed value, which the coordinator checks against its request before
:meth:`SealedBundle.open` decrypts, verifies and validates every manifest field the payload's
decoding relies on. Every failure is an ``InvalidBundle`` (or a subclass).

Round trip (see ``tests/shared/test_bundle.py``)::

    payload = encode_payload(images, labels)  # images (N, C, H, W), labels (N,)
    manifest = BundleManifest(..., payload=payload_info(payload, count=N))
    sealed = seal_bundle(manifest, payload, site_key, coordinator_key.public_key())
    opened = open_bundle(sealed, coordinator_key, lambda site_id: site_key.public_key(), max_bytes)
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from shared import crypto
from shared.errors import DecryptionError, InvalidBundle
from shared.fields import SCHEMA_VERSION, Hex64, RunId, SiteId, first_problem
from shared.manifest import BundleManifest, PayloadInfo

MAGIC = b"FDSB\x01"
HPKE_INFO_PREFIX = b"feddistill/v1"
_U32 = struct.Struct(">I")
_MAX_HEADER_BYTES = 4096
_MAX_MANIFEST_BYTES = 1 << 20
# Normalised images live in [-1, 1]. Measured (scripts/measure_pixel_range.py, docs/benchmarks.md): every
# method's CPU preset stays within +-7.4, and MTT at a ten times larger image step than its default
# reached 43.8. Beyond 64 a set is not images but a way to swamp the pool; it is refused at both ends.
MAX_ABS_PIXEL = 64.0
# The largest images and task a manifest may describe (as a ModelSpec allows: 16 channels, 512 pixels, 1000 classes).
_MAX_CHANNELS, _MAX_SIDE, _MAX_CLASSES = 16, 512, 1000


class BundleHeader(BaseModel):
    """Clear-text routing data of a sealed bundle; bound into the HPKE info."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    # The HPKE suite of the coordinator key the site sealed to (the one it pinned).
    suite: Literal[
        "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM", "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
    ] = crypto.HPKE_SUITE_NAME
    site_id: SiteId
    run_id: RunId
    nonce: Hex64


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle that decrypted, whose signature matched its site's key and whose payload parsed.

    ``images`` is float32 (N, C, H, W); ``labels`` is int64 (N,); ``soft_labels`` float32 (N, K) rows of class
    probabilities, or None for a set released with its classes only.
    """

    header: BundleHeader
    manifest: BundleManifest
    images: np.ndarray
    labels: np.ndarray
    sealed_bytes: int
    signed: bytes = b""  # what the site signed (manifest and payload), and its signature: kept to forward
    signature: bytes = b""
    soft_labels: np.ndarray | None = None

    def forwarded(self, signer: crypto.VerifyKey) -> ForwardedSet:
        """This set as it is passed on to other sites, under the key it was verified with."""
        return ForwardedSet(crypto.verify_key_bytes(signer), self.signature, self.signed)


@dataclass(frozen=True)
class SealedBundle:
    """A sealed bundle parsed at the door, not yet decrypted: its clear header, the header's exact bytes
    (bound into the HPKE info) and the ciphertext. The header is unauthenticated until :meth:`open`."""

    header: BundleHeader
    header_bytes: bytes
    ciphertext: bytes
    total_bytes: int

    @classmethod
    def from_bytes(cls, sealed: bytes, max_bytes: int | None = None) -> SealedBundle:
        """Parse the bytes as received; ``max_bytes`` refuses anything larger before any parsing.

        Raises:
            InvalidBundle: too large, wrong magic, truncated, or a header that does not parse.
        """
        if max_bytes is not None and len(sealed) > max_bytes:
            raise InvalidBundle(f"bundle is {len(sealed)} bytes, over the limit of {max_bytes} bytes")
        if not sealed.startswith(MAGIC):
            raise InvalidBundle("bundle does not start with the expected magic bytes (not a sealed bundle)")
        header_bytes, offset = _read_block(sealed, len(MAGIC), _MAX_HEADER_BYTES, "header")
        try:
            header = BundleHeader.model_validate_json(header_bytes)
        except ValidationError as exc:
            raise InvalidBundle(f"bundle header is malformed: {first_problem(exc)}") from exc
        return cls(header, header_bytes, sealed[offset:], len(sealed))

    def open(
        self, recipient_key: crypto.RecipientKey, verify_key_for: Callable[[str], crypto.VerifyKey]
    ) -> OpenedBundle:
        """Decrypt, verify and parse. Every failure becomes an ``InvalidBundle`` subclass.

        Args:
            recipient_key: the coordinator's HPKE private key.
            verify_key_for: the registered signing key of a site id; raises ``VerificationError`` for
                an unknown site.

        Raises:
            InvalidBundle: malformed, or a manifest inconsistent with the header or the payload.
            DecryptionError: does not decrypt with this key and header.
            VerificationError: unknown site or bad signature.
        """
        header = self.header
        verify_key = verify_key_for(header.site_id)
        if header.suite != crypto.HPKE_SUITE_NAMES[recipient_key.suite]:
            raise DecryptionError(
                f"bundle is sealed with HPKE suite {header.suite}, but this coordinator's key is "
                f"{recipient_key.suite.value}"
            )
        signed = crypto.open_sealed(self.ciphertext, recipient_key, info=hpke_info(self.header_bytes))
        if len(signed) < crypto.SIGNATURE_BYTES:
            raise InvalidBundle("signed bundle is shorter than a signature")
        signed_part, signature = signed[: -crypto.SIGNATURE_BYTES], signed[-crypto.SIGNATURE_BYTES :]
        crypto.verify(verify_key, signed_part, signature)
        manifest, payload = _read_signed(signed_part)
        _check_header_and_recipient(manifest, header, recipient_key)
        images, labels, soft = decode_payload(payload, manifest.image_shape, manifest.payload.count,
                                              _soft_label_classes(manifest))
        return OpenedBundle(header, manifest, images, labels, sealed_bytes=self.total_bytes,
                            signed=signed_part, signature=signature, soft_labels=soft)


@dataclass(frozen=True)
class ForwardedSet:
    """A site's signed set as the coordinator passes it on to the other sites, which score only models they
    train themselves on such sets (``site_agent.scored_model``): the signer's public key, the site's signature
    and the exact bytes it signed. The coordinator cannot alter a set without breaking the signature, nor
    make one up without a key the receiving site pinned.

    Wire format: ``signer (32 bytes, raw Ed25519) | signature (64 bytes) | signed bundle without its signature``.
    """

    signer: bytes
    signature: bytes
    signed: bytes

    def to_bytes(self) -> bytes:
        return self.signer + self.signature + self.signed

    @property
    def signer_fingerprint(self) -> str:
        """The fingerprint of the key the set names (``crypto.fingerprint``), which the receiver looks up in its pins.

        Raises:
            VerificationError: the named key is malformed.
        """
        return crypto.fingerprint(crypto.verify_key_from_bytes(self.signer))

    @classmethod
    def from_bytes(cls, data: bytes) -> ForwardedSet:
        """Raises: InvalidBundle: too short to hold a key, a signature and a manifest length."""
        head = crypto.VERIFY_KEY_BYTES + crypto.SIGNATURE_BYTES
        if len(data) < head + _U32.size:
            raise InvalidBundle("a forwarded set is too short to hold a signing key, a signature and a manifest")
        return cls(data[: crypto.VERIFY_KEY_BYTES], data[crypto.VERIFY_KEY_BYTES : head], data[head:])

    def open(self) -> tuple[BundleManifest, np.ndarray, np.ndarray, np.ndarray | None]:
        """Verify the signature with the key the set names, then parse it: (manifest, images, labels, soft labels).

        Whose key that is, and whether it may be trusted, is the receiver's question (it pins its peers).

        Raises:
            VerificationError: the signature does not match the named key (or the key is malformed).
            InvalidBundle: the signed bytes do not parse, or the payload does not match its manifest.
        """
        crypto.verify(crypto.verify_key_from_bytes(self.signer), self.signed, self.signature)
        manifest, payload = _read_signed(self.signed)
        return (manifest, *decode_payload(payload, manifest.image_shape, manifest.payload.count,
                                          _soft_label_classes(manifest)))


def encode_payload(images: np.ndarray, labels: np.ndarray, soft_labels: np.ndarray | None = None) -> bytes:
    """Payload bytes for images (N, C, H, W), labels (N,) and optional soft labels (N, K), in the documented layout."""
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (N, C, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    if soft_labels is not None and (soft_labels.ndim != 2 or soft_labels.shape[0] != images.shape[0]):
        raise ValueError(f"soft labels must be (N, K) for N = {images.shape[0]} images, got {soft_labels.shape}")
    soft = b"" if soft_labels is None else soft_labels.astype("<f2").tobytes(order="C")
    return images.astype("<f2", copy=False).tobytes(order="C") + labels.astype("<u2").tobytes() + soft


def decode_payload(
    payload: bytes, image_shape: tuple[int, int, int], count: int, soft_label_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inverse of :func:`encode_payload`: float32 images, int64 labels and, when ``soft_label_classes`` says the
    payload holds them, float32 soft labels (N, K), each row renormalised to sum to 1 (else None).

    Raises:
        InvalidBundle: a dimension is not positive, the byte count does not match ``count`` images of
            ``image_shape``, or a soft label is not a probability vector.
    """
    if count < 1 or min(image_shape) < 1:
        raise InvalidBundle(f"payload of {count} images of shape {image_shape} is empty or has a dimension below 1")
    image_values = count * math.prod(image_shape)  # Python ints: no overflow for any claimed shape
    soft_values = count * (soft_label_classes or 0)
    expected = image_values * 2 + count * 2 + soft_values * 2
    if len(payload) != expected:
        raise InvalidBundle(f"payload has {len(payload)} bytes, expected {expected} for {count} images of {image_shape}"
                            + (f" with {soft_label_classes} soft-label classes" if soft_label_classes else ""))
    images = np.frombuffer(payload, dtype="<f2", count=image_values).reshape(count, *image_shape)
    labels = np.frombuffer(payload, dtype="<u2", offset=image_values * 2, count=count)
    soft = None
    if soft_label_classes:
        raw = np.frombuffer(payload, dtype="<f2", offset=image_values * 2 + count * 2, count=soft_values)
        soft = _probabilities(raw.astype(np.float32).reshape(count, soft_label_classes))
    return images.astype(np.float32), labels.astype(np.int64), soft


# float16 keeps about 3 significant digits: K rounded probabilities may miss a sum of 1 by up to K * 2**-12.
_SOFT_SUM_SLACK = 0.01


def _probabilities(soft: np.ndarray) -> np.ndarray:
    """Soft labels as a signer sent them, checked to be probability vectors and renormalised.

    A site could otherwise put negative or huge "probabilities" in a label to push the global model anywhere.

    Raises:
        InvalidBundle: a value is not finite or negative, or a row does not sum to 1 within float16 rounding.
    """
    if not np.isfinite(soft).all() or (soft < 0).any():
        raise InvalidBundle("soft labels hold a negative or non-finite probability")
    sums = soft.sum(axis=1, dtype=np.float64)
    if (np.abs(sums - 1) > _SOFT_SUM_SLACK + soft.shape[1] * 2**-12).any():
        raise InvalidBundle(f"soft labels must sum to 1 per image; one sums to {sums[np.abs(sums - 1).argmax()]:.4f}")
    return (soft / sums[:, None]).astype(np.float32)


def _soft_label_classes(manifest: BundleManifest) -> int | None:
    """How many soft-label values each image of the manifest's payload carries (None: no soft labels)."""
    return manifest.num_classes if manifest.soft_labels is not None else None


def payload_info(payload: bytes, count: int) -> PayloadInfo:
    """The manifest's description of a payload: size and SHA-256."""
    return PayloadInfo(count=count, sha256=hashlib.sha256(payload).hexdigest(), nbytes=len(payload))


def hpke_info(header_bytes: bytes) -> bytes:
    """The HPKE ``info`` for a bundle: a fixed label followed by the exact header bytes."""
    return HPKE_INFO_PREFIX + b"|" + header_bytes


def seal_bundle(
    manifest: BundleManifest,
    payload: bytes,
    signing_key: crypto.SigningKey,
    recipient: crypto.RecipientPublicKey,
) -> bytes:
    """Sign manifest + payload with the site key, then encrypt the result to the coordinator."""
    manifest_bytes = manifest.model_dump_json().encode()
    signed_part = _U32.pack(len(manifest_bytes)) + manifest_bytes + payload
    signature = crypto.sign(signing_key, signed_part)
    header = BundleHeader(suite=crypto.HPKE_SUITE_NAMES[recipient.suite], site_id=manifest.site_id,
                          run_id=manifest.run_id, nonce=manifest.nonce)
    header_bytes = header.model_dump_json().encode()
    ciphertext = crypto.seal(signed_part + signature, recipient, info=hpke_info(header_bytes))
    return MAGIC + _U32.pack(len(header_bytes)) + header_bytes + ciphertext


def open_bundle(
    sealed: bytes,
    recipient_key: crypto.RecipientKey,
    verify_key_for: Callable[[str], crypto.VerifyKey],
    max_bytes: int,
) -> OpenedBundle:
    """Parse, decrypt, verify and validate a sealed bundle in one call (see :class:`SealedBundle`).

    Raises:
        InvalidBundle: too large (over ``max_bytes``), malformed, or inconsistent.
        DecryptionError: does not decrypt with this key and header.
        VerificationError: unknown site or bad signature.
    """
    return SealedBundle.from_bytes(sealed, max_bytes).open(recipient_key, verify_key_for)


def _read_signed(signed_part: bytes) -> tuple[BundleManifest, bytes]:
    """The manifest and payload of a signed bundle (signature already checked), once the payload fits the manifest.

    Raises:
        InvalidBundle: malformed manifest, bounds it breaks, or a payload of another digest or size.
    """
    manifest_bytes, offset = _read_block(signed_part, 0, _MAX_MANIFEST_BYTES, "manifest")
    try:
        manifest = BundleManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise InvalidBundle(f"bundle manifest is malformed: {first_problem(exc)}") from exc
    _check_bounds(manifest)
    payload = signed_part[offset:]
    if len(payload) != manifest.payload.nbytes or hashlib.sha256(payload).hexdigest() != manifest.payload.sha256:
        raise InvalidBundle("payload does not match the manifest's payload digest or size")
    return manifest, payload


def _check_header_and_recipient(
    manifest: BundleManifest, header: BundleHeader, recipient_key: crypto.RecipientKey
) -> None:
    """Raises: InvalidBundle: the signed manifest disagrees with the clear header or names another coordinator key."""
    for field in ("site_id", "run_id", "nonce"):
        if getattr(manifest, field) != getattr(header, field):
            raise InvalidBundle(f"manifest {field} does not match the bundle header")
    if manifest.recipient_fingerprint != crypto.fingerprint(recipient_key.public_key()):
        raise InvalidBundle("manifest recipient_fingerprint names another coordinator key")


def _check_bounds(manifest: BundleManifest) -> None:
    """Check the bounds the signed manifest's payload is read with.

    Raises:
        InvalidBundle: naming the first field that does not hold.
    """
    channels, height, width = manifest.image_shape
    if not (1 <= channels <= _MAX_CHANNELS and 1 <= height <= _MAX_SIDE and 1 <= width <= _MAX_SIDE):
        raise InvalidBundle(
            f"manifest image_shape {tuple(manifest.image_shape)} is out of bounds "
            f"(1-{_MAX_CHANNELS} channels, sides of 1-{_MAX_SIDE} pixels)"
        )
    if manifest.num_classes > _MAX_CLASSES:
        raise InvalidBundle(f"manifest num_classes {manifest.num_classes} is over {_MAX_CLASSES}")
    # float16 pixels, a uint16 label and, with soft labels, K float16 probabilities
    per_image = 2 * channels * height * width + 2 + 2 * (_soft_label_classes(manifest) or 0)
    if manifest.payload.nbytes != manifest.payload.count * per_image:
        raise InvalidBundle(
            f"manifest payload nbytes {manifest.payload.nbytes} does not hold {manifest.payload.count} images "
            f"of shape {tuple(manifest.image_shape)}"
        )


def _read_block(data: bytes, offset: int, limit: int, what: str) -> tuple[bytes, int]:
    """Read a u32-length-prefixed block at ``offset``; return it and the offset after it."""
    if len(data) < offset + _U32.size:
        raise InvalidBundle(f"bundle is truncated before the {what} length")
    (length,) = _U32.unpack_from(data, offset)
    start = offset + _U32.size
    if length > limit or start + length > len(data):
        raise InvalidBundle(f"bundle {what} length {length} is out of bounds")
    return data[start : start + length], start + length

