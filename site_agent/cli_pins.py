"""``site-agent apps pin | list | unpin`` and ``site-agent peers pin | list | unpin``: what this site's operator
agreed to, out of band. The app packages of the coordinator's runs it serves, and the other hospitals whose
signed sets it trains the models it scores on.

Thin, like ``site_agent.cli``: each command calls ``site_agent.app_pins`` or ``site_agent.peers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from site_agent.app_pins import APP_NAME, installed_version, load_pins, pin, unpin
from site_agent.peers import load_peers, pin_peer, unpin_peer
from site_agent.pin_files import Pin

P = TypeVar("P", bound=Pin)

apps_app = typer.Typer(
    help="The app packages (FABs) this site serves runs of. The site always runs its own installed code; a pin is "
    "its consent to one study's package, checked by SHA-256 before anything of a run is read.",
    no_args_is_help=True,
)
KeyDirOption = Annotated[Path, typer.Option(help="The site's key directory (the pins live beside its keys).")]
HashOption = Annotated[str, typer.Option(help="The package's SHA-256, as `coordinator app-hash` prints it.")]


@apps_app.command("pin")
def pin_app(
    key_dir: KeyDirOption,
    fab_hash: HashOption,
    note: Annotated[str, typer.Option(help="What this package is for (a study name), kept with the pin.")] = "",
) -> None:
    """Serve runs of this app package (read its hash from the coordinating team over another channel)."""
    pinned = pin(key_dir, fab_hash, note)
    typer.echo(f"pinned app package {pinned.fab_hash}; runs of it are answered by the site agent installed here "
               f"({APP_NAME} {installed_version()}), and only if the package declares that version")


@apps_app.command("list")
def list_apps(key_dir: KeyDirOption) -> None:
    """The pinned app packages, newest last."""
    _echo_pins(load_pins(key_dir).apps, "no app package is pinned: every run is refused", lambda app: app.fab_hash)


@apps_app.command("unpin")
def unpin_app(key_dir: KeyDirOption, fab_hash: HashOption) -> None:
    """Stop serving runs of this app package (runs already answered are not affected)."""
    _echo_unpinned(unpin(key_dir, fab_hash), "unpinned; new messages of its runs are refused",
                   "that app package was not pinned")


peers_app = typer.Typer(
    help="The federation's other sites, by signing-key fingerprint. This site scores (evaluate, tune) only a global "
    "model it trains itself on sets signed by itself or a pinned peer, never weights the coordinator sends.",
    no_args_is_help=True,
)
SiteOption = Annotated[str, typer.Option(help="The peer's site id, as its sets name it.")]


@peers_app.command("pin")
def pin_a_peer(
    key_dir: KeyDirOption,
    site_id: SiteOption,
    fingerprint: Annotated[str, typer.Option(help="The peer's signing-key fingerprint (hex), as `site-agent "
                                                  "fingerprint` prints it there; read it from the peer over another channel.")],
    note: Annotated[str, typer.Option(help="Who vouched for it, or the study, kept with the pin.")] = "",
) -> None:
    """Trust this peer's signed sets when training a model to score."""
    pinned = pin_peer(key_dir, site_id, fingerprint, note)
    typer.echo(f"pinned peer {pinned.site_id} ({pinned.fingerprint})")


@peers_app.command("list")
def list_peers(key_dir: KeyDirOption) -> None:
    """The pinned peers, newest last."""
    _echo_pins(load_peers(key_dir).peers, "no peer is pinned: only a pool of this site's own set can be scored",
               lambda peer: f"{peer.site_id}  {peer.fingerprint}")


@peers_app.command("unpin")
def unpin_a_peer(key_dir: KeyDirOption, site_id: SiteOption) -> None:
    """Stop trusting this peer's sets (answers already given are not affected)."""
    _echo_unpinned(unpin_peer(key_dir, site_id), f"unpinned {site_id}; a pool holding its sets is refused from now on",
                   f"{site_id} was not pinned")


def _echo_pins(pins: Sequence[P], none: str, what: Callable[[P], str]) -> None:
    """One line per pin, newest last: what it pins, when, and the operator's note; ``none`` when there is none."""
    if not pins:
        typer.echo(none)
    for entry in pins:
        typer.echo(f"{what(entry)}  pinned {entry.pinned_at}" + (f"  {entry.note}" if entry.note else ""))


def _echo_unpinned(removed: bool, done: str, not_pinned: str) -> None:
    """Say what an unpin did; exit 1 when there was nothing to unpin."""
    if not removed:
        typer.echo(not_pinned)
        raise typer.Exit(1)
    typer.echo(done)
