"""``site-agent apps pin | list | unpin`` and ``site-agent peers pin | list | unpin``: what this site's operator
agreed to, out of band. The app packages of the coordinator's runs it serves, and the other hospitals whose
signed sets it trains the models it scores on.

Thin, like ``site_agent.cli``: each command calls ``site_agent.app_pins`` or ``site_agent.peers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from site_agent.app_pins import APP_NAME, installed_version, load_pins, pin, unpin
from site_agent.peers import load_peers, pin_peer, unpin_peer

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
    pins = load_pins(key_dir)
    if not pins.apps:
        typer.echo("no app package is pinned: every run is refused")
    for app in pins.apps:
        typer.echo(f"{app.fab_hash}  pinned {app.pinned_at}" + (f"  {app.note}" if app.note else ""))


@apps_app.command("unpin")
def unpin_app(key_dir: KeyDirOption, fab_hash: HashOption) -> None:
    """Stop serving runs of this app package (runs already answered are not affected)."""
    if unpin(key_dir, fab_hash):
        typer.echo("unpinned; new messages of its runs are refused")
    else:
        typer.echo("that app package was not pinned")
        raise typer.Exit(1)


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
    peers = load_peers(key_dir)
    if not peers.peers:
        typer.echo("no peer is pinned: only a pool of this site's own set can be scored")
    for peer in peers.peers:
        typer.echo(f"{peer.site_id}  {peer.fingerprint}  pinned {peer.pinned_at}" + (f"  {peer.note}" if peer.note else ""))


@peers_app.command("unpin")
def unpin_a_peer(key_dir: KeyDirOption, site_id: SiteOption) -> None:
    """Stop trusting this peer's sets (answers already given are not affected)."""
    if unpin_peer(key_dir, site_id):
        typer.echo(f"unpinned {site_id}; a pool holding its sets is refused from now on")
    else:
        typer.echo(f"{site_id} was not pinned")
        raise typer.Exit(1)
