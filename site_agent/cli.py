"""``site-agent``: the command line of a hospital's ML/IT team. Thin: each command calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared import crypto
from shared.errors import KeyFileError
from shared.keys import COORDINATOR_PUB, create_site_keys
from shared.logs import run_cli
from site_agent import cli_tools

app = typer.Typer(help="Run a hospital's site agent.", pretty_exceptions_enable=False,
                  no_args_is_help=True, add_completion=False)


@app.command()
def init(key_dir: Annotated[Path, typer.Option(help="Where the site's keys live (created, 0700).")]) -> None:
    """Create this site's Ed25519 signing key; prints the public key's fingerprint to give the coordinator."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public = create_site_keys(key_dir)
    typer.echo(f"signing key created in {key_dir}\nfingerprint (send with signing.pub): {crypto.fingerprint(public)}")


@app.command("trust-coordinator")
def trust_coordinator(
    key_dir: Annotated[Path, typer.Option(help="The site's key directory.")],
    public_key: Annotated[Path, typer.Option(help="The coordinator's public key file (coordinator.pub).")],
    fingerprint: Annotated[str, typer.Option(help="Fingerprint read out of band; the key must match it.")],
) -> None:
    """Pin the coordinator's HPKE public key: bundles are only ever sealed to this key."""
    key = crypto.load_public_key(public_key, crypto.RecipientPublicKey)
    actual = crypto.fingerprint(key)
    if actual != fingerprint.strip().lower():
        raise KeyFileError(f"coordinator key fingerprint is {actual}, not the expected {fingerprint}")
    crypto.save_public_key(key, key_dir / COORDINATOR_PUB)
    typer.echo(f"pinned coordinator key {actual}")


cli_tools.register(app)  # check, distill, inspect, policy: tools that need no coordinator


def main() -> None:
    """Entry point of the command."""
    run_cli(app)
