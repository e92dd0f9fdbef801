"""``site-agent peers pin | list | unpin``: the other hospitals whose signed sets this site trains scored models on.

Thin, like ``site_agent.cli``: each command calls ``site_agent.peers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from site_agent.peers import load_peers, pin_peer, unpin_peer

peers_app = typer.Typer(
    help="The federation's other sites, by signing-key fingerprint. This site scores (evaluate, tune) only a global "
    "model it trains itself on sets signed by itself or a pinned peer, never weights the coordinator sends.",
    no_args_is_help=True,
)
KeyDirOption = Annotated[Path, typer.Option(help="The site's key directory (the pins live beside its keys).")]
SiteOption = Annotated[str, typer.Option(help="The peer's site id, as its sets name it.")]


@peers_app.command("pin")
def pin(
    key_dir: KeyDirOption,
    site_id: SiteOption,
    fingerprint: Annotated[str, typer.Option(help="The peer's signing-key fingerprint (hex), as `site-agent init` "
                                                  "printed it there; read it from the peer over another channel.")],
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
def unpin(key_dir: KeyDirOption, site_id: SiteOption) -> None:
    """Stop trusting this peer's sets (answers already given are not affected)."""
    if unpin_peer(key_dir, site_id):
        typer.echo(f"unpinned {site_id}; a pool holding its sets is refused from now on")
    else:
        typer.echo(f"{site_id} was not pinned")
        raise typer.Exit(1)
