"""``coordinator``: the command line of the coordinating team. Thin: it builds a RunConfig and calls the library."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from coordinator import cli_results
from coordinator.cli_results import FLWR_HOME as _FLWR_HOME
from coordinator.cli_results import JSON as _JSON
from coordinator.cli_results import SUPERLINK as _SUPERLINK
from coordinator.cli_results import control_connection
from coordinator.run_options import (
    ConfigFileOption,
    DatasetOption,
    DeltaOption,
    EpsilonOption,
    IpcOption,
    IterationsOption,
    MethodOption,
    MinSitesOption,
    SettingOption,
    keys_epilog,
    merged_run_values,
    run_option,
)
from shared.config import RunConfig
from shared.crypto import HpkeSuite
from shared.errors import ConfigError
from shared.logs import add_common_options, run_cli

app = typer.Typer(help="Coordinate a federated dataset-distillation study.", pretty_exceptions_enable=False,
                  no_args_is_help=True, add_completion=False)

_DEFAULTS = RunConfig()

add_common_options(app)


sites_app = typer.Typer(help="The trust store: which signing key and SuperNode key speak for which site.",
                        no_args_is_help=True)
app.add_typer(sites_app, name="sites")

_KEYS_DIR = Annotated[Path, typer.Option("--key-dir", help="The coordinator's key directory.")]
_ROOT_CERTS = Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink (default: <key-dir>/tls/ca.crt).")]
_ON_SUPERLINK = "An ABSOLUTE path on the SuperLink host, where the ServerApp runs."


@app.command()
def init(
    keys_dir: Annotated[Path, typer.Option("--key-dir", help="Where the coordinator's keys live (created, 0700).")],
    suite: Annotated[HpkeSuite, typer.Option(help="HPKE suite of the key sites seal to.")] = HpkeSuite.X25519,
    san: Annotated[list[str] | None, typer.Option(help="DNS name or IP the sites dial (repeat); 127.0.0.1 and localhost are always in.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Use this SuperLink certificate instead of issuing one.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The key of --tls-cert.")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="The CA sites should trust for --tls-cert (omit for a public CA).")] = None,
) -> None:
    """Create the coordinator's HPKE key pair and the SuperLink's TLS certificate (whichever is missing; --san re-issues)."""
    from coordinator import tls
    from shared import crypto
    from shared.keys import COORDINATOR_KEY, COORDINATOR_PUB, create_coordinator_key

    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (keys_dir / COORDINATOR_KEY).exists():
        public = crypto.load_public_key(keys_dir / COORDINATOR_PUB, crypto.RecipientPublicKey)
        typer.echo(f"coordinator key kept ({public.suite.value})")
    else:
        public = create_coordinator_key(keys_dir, suite)
        typer.echo(f"coordinator key created in {keys_dir} ({suite.value})")
    typer.echo(f"fingerprint (sites pin it): {crypto.fingerprint(public)}\n"
               f"  to read aloud over the phone: {crypto.speakable(crypto.fingerprint(public))}")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    files = tls.TlsFiles.in_keys_dir(keys_dir)
    if tls_cert is not None and tls_key is not None:
        files = tls.install_own_tls(keys_dir, tls_cert, tls_key, tls_ca)
    elif san or not files.server_cert.exists():
        files = tls.issue_tls(keys_dir, san or [])
    cert = crypto.load_certificate(files.server_cert)
    typer.echo(f"SuperLink certificate {files.server_cert} for {', '.join(crypto.certificate_names(cert))}")
    if files.ca_cert.exists():
        typer.echo(f"give the sites {files.ca_cert} (SHA-256 {crypto.certificate_fingerprint(crypto.load_certificate(files.ca_cert))})")


@sites_app.command("add")
def sites_add(
    keys_dir: _KEYS_DIR,
    site_id: Annotated[str, typer.Option(help="The site's stable id, as in its node config.")],
    signing_key: Annotated[Path, typer.Option(help="The site's signing.pub, received out of band.")],
    node_key: Annotated[Path | None, typer.Option(help="The site's node.pub (SuperNode auth key), received out of band.")] = None,
    superlink: _SUPERLINK = None,
    root_certificates: _ROOT_CERTS = None,
    flwr_home: _FLWR_HOME = Path(".flwr-home"),
) -> None:
    """Register a site's signing key and SuperNode key; with a SuperLink connection, also register its node there."""
    from coordinator import control
    from coordinator.trust import record_flower_node, register_node_key, register_site

    typer.echo(f"registered {site_id}: signing key {register_site(keys_dir, site_id, signing_key)}")
    if node_key is None:
        return
    typer.echo(f"registered {site_id}: SuperNode key {register_node_key(keys_dir, site_id, node_key)}")
    if superlink is None and not (flwr_home / "config.toml").exists():
        typer.echo(f"warning: {site_id}'s SuperNode was NOT registered with a SuperLink (no --superlink and no saved "
                   f"connection in {flwr_home}); it cannot connect until you run this again with --superlink HOST:PORT",
                   err=True)
        return
    conn = control_connection(keys_dir, superlink, root_certificates, flwr_home)
    node_id = control.register_node(conn, node_key, site_id)
    record_flower_node(keys_dir, site_id, node_id)
    typer.echo(f"registered {site_id}'s SuperNode with the SuperLink at {conn.address} (node id {node_id})")


@sites_app.command("list")
def sites_list(keys_dir: _KEYS_DIR, as_json: _JSON = False) -> None:
    """Registered sites with their signing-key and SuperNode-key fingerprints and SuperLink node id."""
    from coordinator.trust import flower_node_of, load_coordinator_keys
    from shared import crypto
    from shared.tables import show, show_json

    keys = load_coordinator_keys(keys_dir)
    rows = [{"site": site_id,
             "signing_key": crypto.fingerprint(keys.sites[site_id]) if site_id in keys.sites else None,
             "node_key": crypto.node_key_fingerprint(keys.node_keys[site_id]) if site_id in keys.node_keys else None,
             "superlink_node": flower_node_of(keys_dir, site_id)}
            for site_id in sorted(set(keys.sites) | set(keys.node_keys))]
    if as_json:
        show_json(rows)
        return
    show(rows, {"site": "site", "signing_key": "signing key", "node_key": "SuperNode key",
                "superlink_node": "SuperLink node"})
    if not rows:
        typer.echo(f"no site registered in {keys_dir} yet: coordinator sites add")


@sites_app.command("revoke")
def sites_revoke(
    keys_dir: _KEYS_DIR,
    site_id: Annotated[str, typer.Option(help="The site to remove.")],
    superlink: _SUPERLINK = None,
    root_certificates: _ROOT_CERTS = None,
    flwr_home: _FLWR_HOME = Path(".flwr-home"),
) -> None:
    """Unregister a site's node from the SuperLink, then remove its keys (its bundles are rejected from then on)."""
    from coordinator import control
    from coordinator.trust import flower_node_of, revoke_site

    node_id = flower_node_of(keys_dir, site_id)
    connected = superlink is not None or (flwr_home / "config.toml").exists()
    if node_id is not None and connected:
        # First, so a SuperLink that refuses leaves the site as it was, ready for a retry (its node id is kept).
        try:
            control.unregister_node(control_connection(keys_dir, superlink, root_certificates, flwr_home), node_id)
        except control.ControlError as exc:
            raise control.ControlError(f"nothing revoked: the SuperLink did not unregister {site_id}'s SuperNode "
                                       f"(node id {node_id}): {exc}", hint=exc.hint) from exc
        typer.echo(f"unregistered {site_id}'s SuperNode (node id {node_id}) from the SuperLink")
    revoke_site(keys_dir, site_id)
    typer.echo(f"revoked {site_id}: its bundles are rejected from now on")
    if node_id is not None and not connected:
        typer.echo(f"warning: {site_id}'s SuperNode (node id {node_id}) is still registered on the SuperLink; "
                   f"unregister it there: flwr supernode unregister {node_id} <connection>", err=True)


@app.command()
def serve(
    keys_dir: _KEYS_DIR,
    state_dir: Annotated[Path, typer.Option(help="SuperLink state: state.db, flwr-home/, superlink.log.")],
    host: Annotated[str, typer.Option(help="Address to listen on (default: loopback only; see the help text).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The one HTTPS port (Fleet, Control and Runtime API).")] = 9092,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the ServerApp (training the global model).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Check and print the command, start nothing.")] = False,
) -> None:
    """Run the SuperLink with TLS, SuperNode authentication, a state database and no runtime installs.

    Its one port also serves Flower's Control API, which has no authentication in Flower OSS: whoever reaches
    it can start runs. So it listens on loopback unless --host says otherwise; to serve sites on other
    machines, put deploy/proxy's reverse proxy in front (it admits /v1/control/* only from the operator).
    """
    from coordinator.superlink import SuperLinkSettings, exposure_note, superlink_command
    from coordinator.superlink import serve as run_superlink

    settings = SuperLinkSettings(keys_dir=keys_dir, state_dir=state_dir, host=host, port=port, threads=threads)
    if dry_run:
        typer.echo(" ".join(superlink_command(settings)))
        return
    typer.echo(exposure_note(settings), err=True)
    run_superlink(settings)


@app.command()
def fingerprint(keys_dir: Annotated[Path, typer.Option("--key-dir", help="The coordinator's key directory.")]) -> None:
    """Print the coordinator key's fingerprint, which each site checks when it pins the key (read it out of band)."""
    from shared import crypto
    from shared.keys import COORDINATOR_PUB

    typer.echo(crypto.fingerprint(crypto.load_public_key(keys_dir / COORDINATOR_PUB, crypto.RecipientPublicKey)))


@app.command("app-hash")
def app_hash(
    app_dir: Annotated[Path, typer.Option(help="The feddistill project folder (flwr packages it).")] = Path("."),
) -> None:
    """Print the SHA-256 of the app package `coordinator run` submits: each site pins it (`site-agent apps pin`)."""
    from coordinator import control

    typer.echo(control.app_hash(app_dir))


@app.command(epilog=keys_epilog())
def run(
    ctx: typer.Context,
    keys_dir: Annotated[str, run_option("keys-dir", "--key-dir", then=_ON_SUPERLINK)],
    out_dir: Annotated[str, run_option("out-dir", then=_ON_SUPERLINK)],
    superlink: _SUPERLINK = None,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink.")] = None,
    flwr_home: _FLWR_HOME = Path(".flwr-home"),
    app_dir: Annotated[Path, typer.Option(help="The feddistill project folder (flwr packages it).")] = Path("."),
    dataset: DatasetOption = _DEFAULTS.dataset,
    sites: Annotated[int, run_option("sites")] = _DEFAULTS.sites,
    min_sites: MinSitesOption = _DEFAULTS.min_sites,
    method: MethodOption = _DEFAULTS.method,
    ipc: IpcOption = _DEFAULTS.ipc,
    iterations: IterationsOption = _DEFAULTS.iterations,
    epsilon: EpsilonOption = _DEFAULTS.epsilon,
    delta: DeltaOption = _DEFAULTS.delta,
    node_wait_timeout: Annotated[float, run_option("node-wait-timeout")] = _DEFAULTS.node_wait_timeout,
    distill_timeout: Annotated[float, run_option("distill-timeout")] = _DEFAULTS.distill_timeout,
    config_file: ConfigFileOption = None,
    setting: SettingOption = None,
    resume: Annotated[str | None, typer.Option(help="Continue this stopped run folder (name under --out-dir, or absolute).")] = None,
    follow: Annotated[bool, typer.Option(help="Stream the run's log until it ends.")] = True,
) -> None:
    """Launch a round on the remote SuperLink and stream its log; results land in --out-dir on the SuperLink host."""
    from coordinator import control

    for name, value in (("--key-dir", keys_dir), ("--out-dir", out_dir)):
        if not value.startswith("/"):
            raise ConfigError(f"{name} {value!r} must be an absolute path on the SuperLink host")
    options = {"dataset": dataset, "sites": sites, "min_sites": min_sites, "method": method, "ipc": ipc,
               "iterations": iterations, "epsilon": epsilon, "delta": delta, "node_wait_timeout": node_wait_timeout,
               "distill_timeout": distill_timeout, "keys_dir": keys_dir, "out_dir": out_dir}
    values = merged_run_values(ctx, options, config_file, setting)
    if resume:
        folder = f"run-{resume}" if resume.isdigit() else resume  # run-7, or the 7 of Flower's first attempt
        values |= {"resume": True, "run-dir": folder if folder.startswith("/") else f"{out_dir.rstrip('/')}/{folder}"}
    config = RunConfig.from_flower(values, help_command=ctx.command_path)
    conn = control_connection(None, superlink, root_certificates, flwr_home)
    app_path = control.check_app_dir(app_dir)
    run_config = control.write_run_config(conn, config, f"run-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}")
    typer.echo(f"app package sha256 {control.app_hash(app_path)} (each site serves it only once pinned: "
               "site-agent apps pin)")
    run_id = control.submit_run(conn, app_path, run_config)
    results_dir = config.run_dir or f"{config.out_dir.rstrip('/')}/run-{run_id}"
    control.record_run(conn, run_id, results_dir)
    name = Path(results_dir).name
    typer.echo(f"run {name} started (Flower run {run_id}); results: {results_dir} on the SuperLink host")
    if not follow:
        return
    control.follow_log(conn, run_id)
    final = control.run_status(conn, run_id)
    typer.echo(f"run {name}: {final}; results: {results_dir}")
    if final != "finished:completed":
        raise typer.Exit(1)


def _add_installed_commands(app: typer.Typer) -> None:
    """Commands other installed parts add (the simulation harness: ``simulate``, ``study``), by entry point."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="feddistill.coordinator"):
        try:
            register = entry.load()
        except ModuleNotFoundError:  # an image built without that part (the site and coordinator images)
            continue
        register(app)


cli_results.register(app)  # status, results: what the SuperLink and the results folders say
_add_installed_commands(app)


def main() -> None:
    """Entry point of the command."""
    run_cli(app, renamed={"--keys-dir": "--key-dir"})
