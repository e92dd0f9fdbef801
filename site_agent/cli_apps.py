"""``site-agent apps pin | list | unpin``: which of the coordinator's app packages this site agrees to serve.

Thin, like ``site_agent.cli``: each command calls ``site_agent.app_pins``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from site_agent.app_pins import APP_NAME, installed_version, load_pins, pin, unpin

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
