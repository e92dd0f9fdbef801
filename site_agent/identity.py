"""A site's identity: its own signing key and the coordinator's pinned public key (layout: ``shared.keys``).

Loaded for every request, so a key problem is answered to the coordinator: its message names the kind of
key, never a path or a file name; which file it is goes to the site's own log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shared import crypto
from shared.errors import KeyFileError
from shared.keys import COORDINATOR_PUB, SIGNING_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteIdentity:
    """Who this site is and whom it releases to."""

    site_id: str
    signing_key: crypto.SigningKey
    coordinator_key: crypto.RecipientPublicKey


def load_site_identity(site_id: str, key_dir: Path) -> SiteIdentity:
    """Load the signing key and the pinned coordinator key.

    Raises:
        KeyFileError: the directory or a key is missing, unsafe or of the wrong kind (logged with its file).
    """
    try:
        return _load(site_id, key_dir)
    except KeyFileError as exc:
        log.error("site %s: %s (%s)", site_id, exc, exc.local_detail)
        raise


def _load(site_id: str, key_dir: Path) -> SiteIdentity:
    if not key_dir.is_dir():
        raise KeyFileError(f"key directory of site {site_id!r} does not exist",
                           hint="create the site's keys with `site-agent init --key-dir DIR`",
                           local_detail=f"key directory: {key_dir}")
    signing_key = crypto.load_private_key(key_dir / SIGNING_KEY, crypto.SigningKey)
    if not (key_dir / COORDINATOR_PUB).is_file():  # the step after init: each fix names its command
        raise KeyFileError(f"no coordinator key is pinned for site {site_id!r}",
                           hint="pin it with `site-agent trust-coordinator --key-dir DIR --public-key coordinator.pub "
                           "--fingerprint FINGERPRINT` (the fingerprint read to you out of band)",
                           local_detail=f"missing file: {key_dir / COORDINATOR_PUB}")
    coordinator_key = crypto.load_public_key(key_dir / COORDINATOR_PUB, crypto.RecipientPublicKey)
    return SiteIdentity(site_id, signing_key, coordinator_key)
