"""Signing bundles and sealing them to the coordinator: Ed25519 and HPKE (RFC 9180), nothing composed by hand.

* **Signature**: Ed25519 by the site's signing key over ``SIGNATURE_DOMAIN || message``. The domain
  string keeps a bundle signature from being valid for any other use of the same key.
* **Encryption**: HPKE base mode with HKDF-SHA256 and AES-256-GCM to the coordinator's public key,
  under one of two KEMs (:class:`HpkeSuite`): DHKEM(X25519, HKDF-SHA256), the default, or the hybrid
  post-quantum MLKEM768-X25519. The caller's ``info`` bytes are bound into the key schedule, so a
  ciphertext opens only with exactly the same ``info``. The ciphertext is the library's single-shot
  output: the encapsulated key (32 bytes, or 1120 for the hybrid) followed by the AEAD ciphertext.
  The suite is a property of the key: a site seals with its pinned key's suite.
* **Fingerprint** of a signing or HPKE key: the SHA-256 of its raw public bytes (X25519 then ML-KEM
  for the hybrid), in hex.

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
import hmac
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared.errors import DecryptionError, VerificationError

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


def speakable(fingerprint_hex: str) -> str:
    """A fingerprint as six groups of five digits, to read aloud (Signal's safety-number encoding).

    Each group is five bytes of the fingerprint read as a number, modulo 100000: 30 digits, about 100
    bits of the SHA-256, which is what a phone call can compare without mistakes.
    """
    digest = bytes.fromhex(fingerprint_hex)
    return " ".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


def matches_fingerprint(fingerprint_hex: str, given: str) -> bool:
    """Whether ``given`` (hex, with any spaces or colons, or the six digit groups of :func:`speakable`) is it."""
    compact = "".join(given.split()).replace(":", "").lower()
    if compact.isdigit() and len(compact) == 30:
        return hmac.compare_digest(compact, speakable(fingerprint_hex).replace(" ", ""))
    return hmac.compare_digest(compact, fingerprint_hex)


def fingerprint(public_key: VerifyKey | RecipientPublicKey) -> str:
    """SHA-256 of the raw public key bytes, hex: short enough to compare over the phone."""
    if isinstance(public_key, RecipientPublicKey):
        return hashlib.sha256(public_key.raw_bytes()).hexdigest()
    return hashlib.sha256(verify_key_bytes(public_key)).hexdigest()


VERIFY_KEY_BYTES = 32


def verify_key_bytes(public_key: VerifyKey) -> bytes:
    """The raw 32 bytes of a signing key's public half (what :func:`fingerprint` hashes)."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_key_from_bytes(raw: bytes) -> VerifyKey:
    """The inverse of :func:`verify_key_bytes`.

    Raises:
        VerificationError: not the 32 bytes of an Ed25519 public key.
    """
    if len(raw) != VERIFY_KEY_BYTES:
        raise VerificationError(f"a signing key is {VERIFY_KEY_BYTES} bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)
