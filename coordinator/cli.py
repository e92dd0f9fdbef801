"""``coordinator``: the command line of the coordinating team. Thin: it builds a RunConfig and calls the library."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from coordinator.run_options import keys_epilog, merged_run_values
from coordinator.study.plan import StudyConfig
from shared.config import RunConfig
from shared.crypto import HpkeSuite
from shared.errors import ConfigError
from shared.logs import add_common_options, run_cli
from shared.schemas import DistillMethod, ImbalanceCorrection, InitMode, PartitionScheme, setting_error

app = typer.Typer(help="Coordinate a federated dataset-distillation study.", pretty_exceptions_enable=False,
                  no_args_is_help=True, add_completion=False)

_DEFAULTS = RunConfig()
_STUDY = StudyConfig()

# Study options shared by `simulate` and `run`: one help text each.
_Dataset = Annotated[str, typer.Option(help="MedMNIST 2D dataset flag, e.g. breastmnist, retinamnist, pathmnist.")]
_MinSites = Annotated[int, typer.Option(help="Fewest valid bundles for the run to go on.")]
_Method = Annotated[DistillMethod, typer.Option(help="Distillation method run at every site.")]
_Ipc = Annotated[int, typer.Option(help="Synthetic images per class per site.")]
_Iterations = Annotated[int, typer.Option(help="Distillation iterations (0: the method's CPU preset).")]
_Epsilon = Annotated[float, typer.Option(help="dpdm: each site's differential-privacy epsilon for its one release.")]
_Delta = Annotated[float, typer.Option(help="dpdm: each site's differential-privacy delta.")]
_DataRoot = Annotated[str, typer.Option(help="MedMNIST folder, or a hospital's own .npz export or image folder, to share out across the sites (default: $MEDMNIST_ROOT).")]
_Partition = Annotated[PartitionScheme, typer.Option(help="How the dataset is split across sites.")]
_Alpha = Annotated[float, typer.Option(help="Dirichlet concentration: smaller = more different label mixes.")]
_ConfigFile = Annotated[Path | None, typer.Option("--config", help="A TOML file of run-config keys (key = value, listed below); options on the command line and --set override it.")]
_Setting = Annotated[list[str] | None, typer.Option("--set", help="Any run-config key (listed below), e.g. --set train-epochs=50; overrides the rest.")]


add_common_options(app)


@app.command(epilog=keys_epilog())
def simulate(
    ctx: typer.Context,
    dataset: _Dataset = _DEFAULTS.dataset,
    sites: Annotated[int, typer.Option(help="Number of simulated sites (Flower SuperNodes).")] = _DEFAULTS.sites,
    partition: _Partition = _DEFAULTS.partition,
    alpha: _Alpha = _DEFAULTS.alpha,
    method: _Method = _DEFAULTS.method,
    ipc: _Ipc = _DEFAULTS.ipc,
    iterations: _Iterations = _DEFAULTS.iterations,
    epsilon: _Epsilon = _DEFAULTS.epsilon,
    delta: _Delta = _DEFAULTS.delta,
    data_root: _DataRoot = "",
    min_sites: _MinSites = _DEFAULTS.min_sites,
    seed: Annotated[int, typer.Option(help="Seed for partitioning, distillation and training.")] = _DEFAULTS.seed,
    rounds: Annotated[int, typer.Option(help="Rounds: from round 2 each site refines its set against the global model.")] = _DEFAULTS.rounds,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1, ...")] = _DEFAULTS.device,
    out_dir: Annotated[Path, typer.Option(help="Parent folder of the run's results folder.")] = Path(_DEFAULTS.out_dir),
    init: Annotated[InitMode, typer.Option(help="Synthetic init. 'real' copies patient images into the release: demos only.")] = _DEFAULTS.init,
    batch_real: Annotated[int, typer.Option(help="Real images per class per matching step (0: the method's CPU preset).")] = _DEFAULTS.batch_real,
    outer_loop: Annotated[int, typer.Option(help="DC outer loop (0: the paper's value for the ipc).")] = _DEFAULTS.outer_loop,
    inner_loop: Annotated[int, typer.Option(help="DC inner loop (0: the paper's value for the ipc).")] = _DEFAULTS.inner_loop,
    net_width: Annotated[int, typer.Option(help="ConvNet width (the paper uses 128).")] = _DEFAULTS.net_width,
    dsa: Annotated[bool, typer.Option(help="Differentiable Siamese augmentation while distilling.")] = _DEFAULTS.dsa,
    train_epochs: Annotated[int, typer.Option(help="Epochs to train the global model on the pooled set.")] = _DEFAULTS.train_epochs,
    imbalance: Annotated[ImbalanceCorrection, typer.Option(help="Correct the global model for the class mix the sites release.")] = _DEFAULTS.imbalance,
    config_file: _ConfigFile = None,
    setting: _Setting = None,
    verbose: Annotated[bool, typer.Option(help="Flower's debug logging.")] = False,
) -> None:
    """Run a multi-site federation on this machine with Flower's Simulation Engine and write a results folder."""
    from coordinator.simulate import simulate as run_simulation

    options = {k: v for k, v in locals().items() if k not in ("ctx", "verbose", "run_simulation", "setting", "config_file")}
    config = RunConfig.from_flower(merged_run_values(ctx, options, config_file, setting))
    run_dir, summary = run_simulation(config, verbose=verbose)
    typer.echo(f"{summary['sites_accepted']}/{summary['sites_expected']} sites accepted; {_pooled(summary)}")
    if "yardstick" in summary:
        y = summary["yardstick"]["uncorrected"]
        typer.echo(f"a random real subset of the same size (not private): balanced accuracy "
                   f"{_fmt(y['balanced_accuracy'])}, AUC {_fmt(y['auc'])} (uncorrected; report.md has both)")
    typer.echo(f"results: {run_dir}")


@app.command()
def study(
    dataset: _Dataset = _STUDY.dataset,
    data_root: _DataRoot = "",
    sites: Annotated[int, typer.Option(help="Number of simulated sites.")] = _STUDY.sites,
    partition: _Partition = _STUDY.partition,
    alpha: _Alpha = _STUDY.alpha,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="A seed of the study; repeat for more (default 0, 1, 2).")] = None,
    methods: Annotated[list[DistillMethod] | None, typer.Option("--method", help="A pooled arm's method; repeat (default dc, dm, mtt, idm).")] = None,
    ipcs: Annotated[list[int] | None, typer.Option("--ipc", help="A pooled arm's images per class; repeat (default 1, 10, 50).")] = None,
    rounds: Annotated[int, typer.Option(help="Refinement rounds of each pooled arm; rounds 1 and R are both reported.")] = _STUDY.rounds,
    iterations: _Iterations = _STUDY.iterations,
    epsilon: _Epsilon = _STUDY.epsilon,
    train_epochs: Annotated[int, typer.Option(help="Epochs of the global model on a pooled set or subset.")] = _STUDY.train_epochs,
    fedavg_local_epochs: Annotated[int, typer.Option(help="FedAvg: local epochs per round.")] = _STUDY.fedavg_local_epochs,
    fedavg_max_rounds: Annotated[int, typer.Option(help="FedAvg: most rounds; it stops earlier at a plateau.")] = _STUDY.fedavg_max_rounds,
    fedavg_patience: Annotated[int, typer.Option(help="FedAvg: rounds without a 0.005 balanced-accuracy gain that make a plateau.")] = _STUDY.fedavg_patience,
    local_epochs: Annotated[int, typer.Option(help="Local only: epochs of each site's own model.")] = _STUDY.local_epochs,
    central_epochs: Annotated[int, typer.Option(help="Centralised: epochs on every training image.")] = _STUDY.central_epochs,
    cross_arch_epochs: Annotated[int, typer.Option(help="Epochs of the ResNet-18 trained on each pooled set and subset (0: skip).")] = _STUDY.cross_arch_epochs,
    net_width: Annotated[int, typer.Option(help="ConvNet width of every arm.")] = _STUDY.net_width,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, ...")] = _STUDY.device,
    out_dir: Annotated[Path, typer.Option(help="Parent folder of the study's folder (study-<dataset>); rerun to resume.")] = Path(_STUDY.out_dir),
    docs: Annotated[Path, typer.Option(help="Where study-<dataset>.md, its plots and its JSON are written.")] = Path("docs"),
) -> None:
    """Compare pooled distilled sets with FedAvg, local-only, a random real subset and centralised training.

    Same partition and seeds for every arm (checked by digest); pooled metrics; bytes per site; a report with plots.
    Rerunning the same command resumes: finished arms are skipped.
    """
    from coordinator.study.report import write_report
    from coordinator.study.runner import run_study

    values = {k: v for k, v in dict(locals()).items() if k not in ("write_report", "run_study", "docs")}
    for name in ("seeds", "methods", "ipcs"):
        if values[name] is None:
            values.pop(name)
    values["out_dir"] = str(out_dir)
    try:
        config = StudyConfig(**values)
    except ValidationError as exc:
        raise setting_error(exc, "option --{key}: {msg}") from None
    folder, records = run_study(config)
    report = write_report(config, records, docs)
    typer.echo(f"{len(records)} arm records in {folder / 'study.json'}; report: {report}")


@app.command("study-correlation")
def study_correlation(
    studies: Annotated[list[Path], typer.Argument(help="study-<dataset>.json files written by `coordinator study`.")],
    docs: Annotated[Path, typer.Option(help="Where study-correlation.md and its plot are written.")] = Path("docs"),
) -> None:
    """Pearson correlation of random-subset and distilled accuracy across studies (Li et al., 2024)."""
    from coordinator.study.report import correlate

    missing = [str(p) for p in studies if not p.is_file()]
    if missing:
        raise ConfigError(f"no study JSON at {', '.join(missing)}")
    typer.echo(f"report: {correlate(studies, docs)}")


sites_app = typer.Typer(help="The trust store: which signing key and SuperNode key speak for which site.",
                        no_args_is_help=True)
app.add_typer(sites_app, name="sites")

_KEYS_DIR = Annotated[Path, typer.Option("--key-dir", help="The coordinator's key directory.")]
_SUPERLINK = Annotated[str | None, typer.Option(help="SuperLink host:port (default: the connection saved by an earlier command).")]
_ROOT_CERTS = Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink (default: <key-dir>/tls/ca.crt).")]
_FLWR_HOME = Annotated[Path, typer.Option(help="Project-local FLWR_HOME holding the connection.")]
_JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


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
    conn = _connection(keys_dir, superlink, root_certificates, flwr_home)
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
            control.unregister_node(_connection(keys_dir, superlink, root_certificates, flwr_home), node_id)
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
    keys_dir: Annotated[str, typer.Option("--key-dir", help="ABSOLUTE path of the coordinator's key directory on the SuperLink host.")],
    out_dir: Annotated[str, typer.Option(help="ABSOLUTE path on the SuperLink host for results folders.")],
    superlink: _SUPERLINK = None,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink.")] = None,
    flwr_home: _FLWR_HOME = Path(".flwr-home"),
    app_dir: Annotated[Path, typer.Option(help="The feddistill project folder (flwr packages it).")] = Path("."),
    dataset: _Dataset = _DEFAULTS.dataset,
    sites: Annotated[int, typer.Option(help="Sites expected.")] = _DEFAULTS.sites,
    min_sites: _MinSites = _DEFAULTS.min_sites,
    method: _Method = _DEFAULTS.method,
    ipc: _Ipc = _DEFAULTS.ipc,
    iterations: _Iterations = _DEFAULTS.iterations,
    epsilon: _Epsilon = _DEFAULTS.epsilon,
    delta: _Delta = _DEFAULTS.delta,
    node_wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for sites to connect.")] = _DEFAULTS.node_wait_timeout,
    distill_timeout: Annotated[float, typer.Option(help="Seconds to wait for bundles.")] = _DEFAULTS.distill_timeout,
    config_file: _ConfigFile = None,
    setting: _Setting = None,
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
    config = RunConfig.from_flower(values)
    conn = _connection(None, superlink, root_certificates, flwr_home)
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


@app.command()
def status(
    run_id: Annotated[int | None, typer.Option(help="Only this Flower run.")] = None,
    superlink: _SUPERLINK = None,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink.")] = None,
    flwr_home: _FLWR_HOME = Path(".flwr-home"),
    keys_dir: Annotated[Path | None, typer.Option("--key-dir", help="The coordinator's key directory: adds each registered site and whether its SuperNode is online.")] = None,
    as_json: _JSON = False,
) -> None:
    """Runs on the SuperLink: status, elapsed time, results folder, and per site what it delivered (and why not).

    A run still going shows per site whether it has delivered or is still distilling; with --key-dir,
    every registered site is listed with its SuperNode's state on the SuperLink.
    """
    from coordinator import control, run_state
    from shared.tables import show, show_json

    conn = _connection(None, superlink, root_certificates, flwr_home)
    runs = []
    for entry in control.list_runs(conn, run_id):
        results_dir = control.results_dir_of(conn, entry.get("run-id", ""))
        summary = _summary(Path(results_dir)) if results_dir else None
        sites = _site_rows(summary) if summary else _site_rows({"sites": run_state.progress(Path(results_dir))}
                                                                 if results_dir else None)
        runs.append({"run": Path(results_dir).name if results_dir else None, "flower_run_id": entry.get("run-id"),
                     "status": entry.get("status"), "elapsed": entry.get("elapsed"), "results": results_dir,
                     "sites": sites})
    registered = _registered_sites(keys_dir, control.node_statuses(conn)) if keys_dir is not None else None
    if as_json:
        show_json({"runs": runs, "sites": registered} if registered is not None else runs)
        return
    if registered is not None:
        show(registered, {"site": "site", "node_id": "node id", "superlink": "on the SuperLink"}, title="registered sites")
    if not runs:
        typer.echo("no run on the SuperLink yet: coordinator run")
        return
    show(runs, {"run": "run", "flower_run_id": "Flower run", "status": "status", "elapsed": "elapsed",
                "results": "results folder"})
    for run in runs:
        if run["sites"]:
            show(run["sites"], _SITE_COLUMNS, title=f"run {run['run'] or run['flower_run_id']}: sites")


def _registered_sites(keys_dir: Path, nodes: dict[int, str]) -> list[dict]:
    """Each site in the trust store with its SuperNode's state on the SuperLink (online, offline, ...)."""
    from coordinator.trust import flower_node_of, load_coordinator_keys

    rows = []
    for site_id in sorted(load_coordinator_keys(keys_dir).sites):
        node_id = flower_node_of(keys_dir, site_id)
        if node_id is None:
            state = "unknown: registered without --superlink (coordinator sites add ... --superlink)"
        else:
            state = nodes.get(node_id, "not registered on this SuperLink")
            state = "registered, never connected" if state == "registered" else state
        rows.append({"site": site_id, "node_id": node_id, "superlink": state})
    return rows


@app.command()
def results(
    out_dir: Annotated[Path, typer.Option(help="The runs' out-dir (on this, the SuperLink host).")],
    as_json: _JSON = False,
) -> None:
    """Results folders under --out-dir with their status and, when complete, the global model's pooled metrics."""
    from shared.tables import show, show_json

    rows = []
    for path in sorted(out_dir.glob("*/summary.json")):
        data = _summary(path.parent) or {}
        glob = data.get("global", {})
        rows.append({"folder": str(path.parent), "run_id": data.get("run_id"), "status": data.get("status"),
                     "sites": f"{data.get('sites_accepted', 0)}/{data.get('sites_expected', 0)}",
                     "test_images": glob.get("num_examples"), "accuracy": glob.get("accuracy"),
                     "majority_rate": glob.get("majority_rate"), "balanced_accuracy": glob.get("balanced_accuracy"),
                     "auc": glob.get("auc"), "error": data.get("error")})
    if as_json:
        show_json(rows)
        return
    if not rows:
        typer.echo(f"no results folder under {out_dir}")
        return
    show(rows, {"folder": "results folder", "status": "status", "sites": "sites accepted", "test_images": "test images",
                "accuracy": "accuracy", "majority_rate": "majority class", "balanced_accuracy": "balanced accuracy",
                "auc": "AUC"})


_SITE_COLUMNS = {"site": "site", "status": "status", "reason": "reason", "bundle_bytes": "bundle bytes",
                 "distill_seconds": "distill s"}


def _summary(run_dir: Path) -> dict | None:
    """A results folder's summary.json, or None when it has none (yet) or it cannot be read."""
    import json

    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _site_rows(summary: dict | None) -> list[dict]:
    if not summary:
        return []
    return [{"site": s.get("site_id") or f"node {s.get('node_id')}", **{k: s.get(k) for k in list(_SITE_COLUMNS)[1:]}}
            for s in summary.get("sites", [])]


def _pooled(summary: dict) -> str:
    """The global model's pooled figures, as one line."""
    glob = summary.get("global", {})
    return (f"global model over {glob.get('num_examples', 0)} test images: accuracy {_fmt(glob.get('accuracy'))} "
            f"(majority class {_fmt(glob.get('majority_rate'))}), balanced accuracy "
            f"{_fmt(glob.get('balanced_accuracy'))}, AUC {_fmt(glob.get('auc'))}")


def _connection(keys_dir: Path | None, superlink: str | None, root_certificates: Path | None, flwr_home: Path):
    """The SuperLink connection: given now (and saved in FLWR_HOME), or the one saved before."""
    import tomllib

    from coordinator.control import CONNECTION, Connection
    from shared.keys import CA_CERT, TLS

    home = flwr_home.expanduser().resolve()
    if superlink is None:
        config = home / "config.toml"
        saved = tomllib.loads(config.read_text()).get("superlink", {}).get(CONNECTION) if config.exists() else None
        if not saved:
            raise ConfigError("no SuperLink connection yet: pass --superlink host:port and --root-certificates")
        return Connection(saved["address"], Path(saved["root-certificates"]), home)
    ca = root_certificates or (keys_dir / TLS / CA_CERT if keys_dir else None)
    if ca is None or not ca.is_file():
        raise ConfigError("--root-certificates: the SuperLink's CA certificate file is needed")
    return Connection(superlink, ca.resolve(), home)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    """Entry point of the command."""
    run_cli(app, renamed={"--keys-dir": "--key-dir"})
