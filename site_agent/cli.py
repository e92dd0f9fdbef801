"""``site-agent``: the command line of a hospital's ML/IT team. Thin: each command calls the library."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from shared import crypto
from shared.errors import ConfigError, KeyFileError
from shared.keys import COORDINATOR_PUB, SIGNING_PUB, create_site_identity
from shared.logs import add_common_options, run_cli
from site_agent import cli_review, cli_tools
from site_agent.cli_pins import apps_app, peers_app

log = logging.getLogger(__name__)

app = typer.Typer(help="Run a hospital's site agent.", pretty_exceptions_enable=False,
                  no_args_is_help=True, add_completion=False)
add_common_options(app)


@app.command()
def init(key_dir: Annotated[Path, typer.Option(help="Where the site's keys live (created, 0700).")]) -> None:
    """Create this site's identity: Ed25519 signing key and ECDSA P-384 SuperNode key; prints both fingerprints."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    signing, node, created = create_site_identity(key_dir)
    typer.echo(
        f"created {', '.join(created)} in {key_dir} (private keys 0600, never sent)\n"
        f"signing key fingerprint (send with signing.pub):    {crypto.fingerprint(signing)}\n"
        f"  to read aloud:                                    {crypto.speakable(crypto.fingerprint(signing))}\n"
        f"SuperNode key fingerprint (send with node.pub):     {crypto.node_key_fingerprint(node)}"
    )


@app.command()
def fingerprint(key_dir: Annotated[Path, typer.Option(help="The site's key directory.")]) -> None:
    """Print this site's signing-key fingerprint (hex), which the coordinator and the peer hospitals pin."""
    typer.echo(crypto.fingerprint(crypto.load_public_key(key_dir / SIGNING_PUB, crypto.VerifyKey)))


@app.command("trust-coordinator")
def trust_coordinator(
    key_dir: Annotated[Path, typer.Option(help="The site's key directory.")],
    public_key: Annotated[Path, typer.Option(help="The coordinator's public key file (coordinator.pub).")],
    fingerprint: Annotated[str, typer.Option(help="Fingerprint read out of band (hex, or the six groups of five digits); the key must match it.")],
) -> None:
    """Pin the coordinator's HPKE public key: bundles are only ever sealed to this key."""
    key = crypto.load_public_key(public_key, crypto.RecipientPublicKey)
    actual = crypto.fingerprint(key)
    if not crypto.matches_fingerprint(actual, fingerprint):  # as read aloud, or pasted with separators
        # Never show the file's own fingerprint: an operator could copy it and defeat the out-of-band check.
        raise KeyFileError(
            f"the coordinator key file {public_key.name!r} does not match the fingerprint you were given; "
            "nothing was pinned",
            hint="do not use this file: get coordinator.pub again and have the coordinating team read its "
            "fingerprint to you over another channel (`coordinator init` prints it)",
        )
    crypto.save_public_key(key, key_dir / COORDINATOR_PUB)
    typer.echo(f"pinned coordinator key {actual} ({crypto.speakable(actual)})")


cli_tools.register(app)  # check, distill, inspect, policy: tools that need no coordinator
cli_review.register(app)  # review, approve, reject, audit: what leaves the site, and its record
app.add_typer(apps_app, name="apps")  # which of the coordinator's app packages this site serves
app.add_typer(peers_app, name="peers")  # whose signed sets a scored model may be trained on


JOIN_HELP = (
    "Check this site's keys and settings, then run its Flower SuperNode against the coordinator (TLS, node auth)."
    "\n\nEvery message is answered by the site agent installed here, never by code the coordinator sends: the "
    "SuperNode runs with process isolation, and this site's own runner handles each message. A run is served only "
    "if its app package's SHA-256 is pinned (`site-agent apps pin`) and the package declares this site agent's "
    "version. The pin is the hospital's consent to that study, not permission to run its code."
)


@app.command(help=JOIN_HELP)
def join(
    site_id: Annotated[str, typer.Option(help="This site's id, as registered with the coordinator.")],
    key_dir: Annotated[Path, typer.Option(help="The site's key directory (site-agent init, trust-coordinator).")],
    superlink: Annotated[str, typer.Option(help="The coordinator's SuperLink as host:port.")],
    root_certificates: Annotated[Path | None, typer.Option(help="Study CA certificate (default: <key-dir>/superlink-ca.crt).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help=cli_tools.DATA_HELP)] = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", hidden=True, help="Old name of --data.")] = None,
    dataset: cli_tools.DatasetOption = None,
    policy: cli_tools.PolicyOption = None,
    policy_file: Annotated[Path | None, typer.Option("--policy-file", hidden=True, help="Old name of --policy.")] = None,
    flwr_home: Annotated[Path | None, typer.Option(help="FLWR_HOME of this SuperNode (default: beside the key dir).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Site-private cache: audit log, budgets, held releases (default: ~/.cache/feddistill/<site-id>, where review, history and audit look).")] = None,
    port: Annotated[int, typer.Option(help="Local Runtime API port; one per SuperNode on a machine.")] = 9094,
    threads: Annotated[int, typer.Option(help="CPU threads for the site agent (OMP_NUM_THREADS etc.).")] = os.cpu_count() or 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    coordinator_fingerprint: Annotated[str | None, typer.Option(help="Refuse to start unless the pinned coordinator key has it.")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Flower's reconnect attempts (default: unlimited).")] = None,
    max_wait_time: Annotated[float | None, typer.Option(help="Flower's reconnect time limit in s (default: none).")] = None,
    restart: Annotated[bool, typer.Option(help="Restart the SuperNode when it exits on a lost connection.")] = True,
    dry_run: Annotated[bool, typer.Option(help="Check and print the command, start nothing.")] = False,
) -> None:
    from site_agent import join as joining

    values = {k: v for k, v in locals().items() if k not in ("dry_run", "restart", "joining", "data_root", "policy")}
    values["data"] = _renamed(data, data_root, "--data", "--data-root")
    values["policy_file"] = _renamed(policy, policy_file, "--policy", "--policy-file")
    settings = joining.settings_from_options(values)
    if dry_run:
        joining.preflight(settings)
        typer.echo(" ".join(joining.supernode_command(settings, settings.home() / "node-config.toml")))
        return
    raise typer.Exit(0 if joining.run_supernode(settings, restart=restart) == 0 else 1)


def _renamed(value: Path | None, old_value: Path | None, name: str, old_name: str) -> Path | None:
    """An option's value given under its name or, deprecated, under its old one (not both).

    Raises:
        ConfigError: both names are given with different values.
    """
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise ConfigError(f"{old_name} is the old name of {name}; give {name} only")
    log.warning("%s is deprecated; use %s", old_name, name)
    return old_value


def main() -> None:
    """Entry point of the command."""
    run_cli(app)
