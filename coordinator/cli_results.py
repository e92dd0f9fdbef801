"""``coordinator status`` and ``coordinator results``: what the SuperLink and the results folders say.

Thin, like ``coordinator.cli``, which registers these commands (:func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.errors import ConfigError

if TYPE_CHECKING:  # imported where used, as the other commands' modules are
    from coordinator.control import Connection
    from coordinator.summary import RunSummary

SUPERLINK = Annotated[str | None, typer.Option(help="SuperLink host:port (default: the connection saved by an earlier command).")]
FLWR_HOME = Annotated[Path, typer.Option(help="Project-local FLWR_HOME holding the connection.")]
JSON = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
_COMMANDS: list[Callable] = []


def _command(function: Callable) -> Callable:
    _COMMANDS.append(function)
    return function


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``results`` to the ``coordinator`` app."""
    for function in _COMMANDS:
        app.command()(function)


@_command
def status(
    run_id: Annotated[int | None, typer.Option(help="Only this Flower run.")] = None,
    superlink: SUPERLINK = None,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink.")] = None,
    flwr_home: FLWR_HOME = Path(".flwr-home"),
    keys_dir: Annotated[Path | None, typer.Option("--key-dir", help="The coordinator's key directory: adds each registered site and whether its SuperNode is online.")] = None,
    as_json: JSON = False,
) -> None:
    """Runs on the SuperLink: status, elapsed time, results folder, and per site what it delivered (and why not).

    A run still going shows per site whether it has delivered or is still distilling; with --key-dir,
    every registered site is listed with its SuperNode's state on the SuperLink.
    """
    from coordinator import control, run_state
    from shared.tables import show, show_json

    conn = control_connection(None, superlink, root_certificates, flwr_home)
    runs = []
    for entry in control.list_runs(conn, run_id):
        results_dir = control.results_dir_of(conn, entry.get("run-id", ""))
        summary = _summary(Path(results_dir)) if results_dir else None
        sites = (_site_rows(summary) if summary else
                 [{"site": p["site_id"], "status": p["status"], "reason": p["reason"]}
                  for p in (run_state.progress(Path(results_dir)) if results_dir else [])])
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


@_command
def results(
    out_dir: Annotated[Path, typer.Option(help="The runs' out-dir (on this, the SuperLink host).")],
    as_json: JSON = False,
) -> None:
    """Results folders under --out-dir with their status and, when complete, the global model's pooled metrics."""
    from coordinator.summary import SummaryError, read_summary
    from shared.tables import show, show_json

    rows = []
    for path in sorted(out_dir.glob("*/summary.json")):
        try:
            row = _results_row(read_summary(path))
        except SummaryError as exc:  # one folder an older version wrote does not hide the others
            typer.echo(f"warning: {exc}", err=True)
            row = {"run_id": None, "status": "unreadable", "error": str(exc)}
        rows.append({"folder": str(path.parent), **row})
    if as_json:
        show_json(rows)
        return
    if not rows:
        typer.echo(f"no results folder under {out_dir}")
        return
    show(rows, {"folder": "results folder", "status": "status", "sites": "sites accepted", "test_images": "test images",
                "accuracy": "accuracy", "majority_rate": "majority class", "balanced_accuracy": "balanced accuracy",
                "auc": "AUC"})


def _results_row(summary: RunSummary) -> dict:
    """One line of ``results``: the run, how it ended, and the global model's pooled figures."""
    glob = summary.global_model
    figures = {"test_images": glob.num_examples, "accuracy": glob.accuracy, "majority_rate": glob.majority_rate,
               "balanced_accuracy": glob.balanced_accuracy, "auc": glob.auc} if glob else {}
    return {"run_id": summary.run_id, "status": summary.status.value,
            "sites": f"{summary.sites_accepted}/{summary.sites_expected}", **figures, "error": summary.error}


_SITE_COLUMNS = {"site": "site", "status": "status", "reason": "reason", "bundle_bytes": "bundle bytes",
                 "distill_seconds": "distill s"}


def _summary(run_dir: Path) -> RunSummary | None:
    """A results folder's summary, or None when it has none yet (or one status cannot read: said on stderr)."""
    from coordinator.summary import SUMMARY_FILE, SummaryError, read_summary

    if not (run_dir / SUMMARY_FILE).is_file():
        return None
    try:
        return read_summary(run_dir)
    except SummaryError as exc:
        typer.echo(f"warning: {exc}", err=True)
        return None


def _site_rows(summary: RunSummary) -> list[dict]:
    return [{"site": s.site_id or f"node {s.node_id}", "status": s.status.value, "reason": s.reason,
             "bundle_bytes": s.bundle_bytes, "distill_seconds": s.distill_seconds} for s in summary.sites]


def control_connection(
    keys_dir: Path | None, superlink: str | None, root_certificates: Path | None, flwr_home: Path
) -> Connection:
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
