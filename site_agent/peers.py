"""Which other hospitals' signing keys this site trusts: ``site-agent peers pin | list | unpin``.

A site scores (evaluates, tunes) only a global model it trains itself on the federation's pooled sets
(``site_agent.scored_model``), and only on sets signed by itself or by a peer pinned here. The coordinator
forwards the sets; it cannot alter one without breaking its signature, nor add one of its own making
without a key this hospital agreed to. That is what keeps a coordinator from sending a model crafted to
single out one patient's image: every model the site scores is the product of genuine released sets.

Peers are pinned out of band, like the coordinator key: each hospital reads its signing-key fingerprint
to the others (``site-agent fingerprint`` prints it). Pins live in ``<key-dir>/pinned-peers.json``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared import crypto
from shared.errors import ConfigError
from shared.fields import SiteId
from site_agent.pin_files import Pin, Pins, Sha256Hex, normalized_digest, pinned_now, read_pins_file, write_pins_file

PEERS_FILE = "pinned-peers.json"

class PinnedPeer(Pin):
    site_id: SiteId
    fingerprint: Sha256Hex  # SHA-256 of the peer's raw Ed25519 signing key (crypto.fingerprint)


class PinnedPeers(Pins):
    peers: list[PinnedPeer] = Field(default_factory=list)

    def site_of(self, fingerprint: str) -> str | None:
        """The site a key is pinned for, or None."""
        return next((p.site_id for p in self.peers if p.fingerprint == fingerprint), None)


def normalized_fingerprint(text: str) -> str:
    """A signing-key fingerprint as typed, as 64 lower-case hex digits.

    Raises:
        ConfigError: it is not one (the six digit groups read aloud confirm a key; they cannot pin one).
    """
    return normalized_digest(text, "a peer's fingerprint is the 64 hex digits `site-agent fingerprint` prints at that "
                             "site", hint="ask the peer's operator for the hex fingerprint of its signing key")


def load_peers(key_dir: Path) -> PinnedPeers:
    """The site's pinned peers (none when the file does not exist).

    Raises:
        ConfigError: the file is unreadable or malformed (its path is logged here, never sent).
    """
    return read_pins_file(key_dir / PEERS_FILE, PinnedPeers, "pinned-peers")


def pin_peer(key_dir: Path, site_id: str, fingerprint: str, note: str = "") -> PinnedPeer:
    """Pin a peer's signing key (again: replaces that site's earlier pin); returns the pin.

    Raises:
        ConfigError: a malformed fingerprint or site id, or a key already pinned for another site.
    """
    digest = normalized_fingerprint(fingerprint)
    peers = load_peers(key_dir)
    if (other := peers.site_of(digest)) not in (None, site_id):
        raise ConfigError(f"that key is already pinned for site {other!r}: one key speaks for one site")
    try:
        new = PinnedPeer(site_id=site_id, fingerprint=digest, note=note, pinned_at=pinned_now())
    except ValueError:
        raise ConfigError(f"site id {site_id!r} must be 1-64 letters, digits, '.', '_' or '-'") from None
    write_pins_file(key_dir / PEERS_FILE, PinnedPeers(peers=[p for p in peers.peers if p.site_id != site_id] + [new]))
    return new


def pin_peer_key(key_dir: Path, site_id: str, public_key: crypto.VerifyKey) -> PinnedPeer:
    """Pin a peer by its public key (where one operator holds every key: a simulation)."""
    return pin_peer(key_dir, site_id, crypto.fingerprint(public_key))


def unpin_peer(key_dir: Path, site_id: str) -> bool:
    """Remove a site's pin; returns whether there was one."""
    peers = load_peers(key_dir)
    kept = [p for p in peers.peers if p.site_id != site_id]
    write_pins_file(key_dir / PEERS_FILE, PinnedPeers(peers=kept))
    return len(kept) != len(peers.peers)
