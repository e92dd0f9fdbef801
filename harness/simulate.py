"""A multi-site federation on one machine, on Flower's Simulation Engine.

Each simulated site is a Flower SuperNode running the real ClientApp on its own share of one dataset
(an official MedMNIST file, or a hospital's own ``.npz`` export or image folder: any format
``site-agent check`` reads), written as its own export before the run (``harness.sites``); the
coordinator is the real ServerApp. Keys are generated per run (simulation keys).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from coordinator import run_state
from coordinator.pool import PooledSet, pool
from coordinator.summary import SUMMARY_FILE, RunStatus, RunSummary, SummaryError, read_summary
from coordinator.trust import load_coordinator_keys
from harness.sites import remove_run_shares, simulated_client_app, write_run_shares
from shared.bundle import OpenedBundle, open_bundle
from shared.config import RunConfig
from shared.errors import FederationError, InvalidBundle
from shared.flower_env import OFFLINE_ENV
from shared.keys import SIMULATION_KEYS
from shared.logs import configure_logging

log = logging.getLogger(__name__)

OFFLINE_FLOWER_ENV = {**OFFLINE_ENV, "RAY_DEDUP_LOGS": "0"}  # each site's lines shown, not folded


class _NotRunSimulationDeprecation(logging.Filter):
    """Drop Flower's note that ``run_simulation`` is deprecated, shown on every run: its replacement, ``flwr run``,
    cannot give each simulated site its own settings (``harness.sites``), so the harness keeps it knowingly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


_QUIET_DEPRECATION = _NotRunSimulationDeprecation()  # one instance: addFilter keeps it once, however many runs


def new_run_dir(config: RunConfig) -> Path:
    """``<out-dir>/<dataset>-<method>-ipc<N>-<UTC timestamp>``, absolute."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = f"{config.dataset}-{config.method.value}-ipc{config.ipc}-{stamp}"
    return Path(config.out_dir).expanduser().resolve() / name


def backend_config(config: RunConfig) -> dict[str, Any]:
    """One CPU per simulated site (so parallel sites never oversubscribe the cores), a GPU share when present."""
    cpus = os.cpu_count() or 1
    use_gpu = torch.cuda.is_available() and config.device in ("auto", "cuda")
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 1.0 / min(config.sites, 4) if use_gpu else 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 1 if use_gpu else 0, "_node_ip_address": "127.0.0.1",
                      "include_dashboard": False},
    }


SHARES_FILE = "shares.json"  # <run-dir>/shares.json: each simulated site's share digest (no image)


def simulate(
    config: RunConfig, verbose: bool = False, client_mods: Sequence[Callable] = (), yardstick: bool = True
) -> tuple[Path, RunSummary]:
    """Run a simulated federation; returns the results folder and its summary.

    ``client_mods`` are Flower mods wrapped around every simulated site (e.g. to record what it sends).
    With ``yardstick``, the summary and report also score a random real subset of the pooled set's
    size (``harness.yardstick``; simulation only, not private).

    Raises:
        FederationError: the run did not complete (the summary in the folder says why, when it got that far).
    """
    os.environ.update(OFFLINE_FLOWER_ENV)
    from flwr.simulation import run_simulation  # after the environment is set: Flower reads it at import

    configure_logging()  # again: importing Flower set its logger back to DEBUG
    logging.getLogger("flwr").addFilter(_QUIET_DEPRECATION)

    from coordinator.server_app import build_server_app

    run_dir = Path(config.run_dir).expanduser().resolve() if config.run_dir else new_run_dir(config)
    config = config.model_copy(update={"run_dir": str(run_dir)})
    shares = write_run_shares(config, run_dir)  # reads the data first: a bad path fails before Flower starts
    if not any(len(share.images.test) for share in shares):
        log.warning("the data has no test split: the sites can distill but the global model cannot be evaluated")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SHARES_FILE).write_text(json.dumps({s.site_id: s.sha256 for s in shares}, indent=2) + "\n")
    log.info("simulating %d sites on %s; results in %s", config.sites, config.dataset, run_dir)
    try:
        run_simulation(
            server_app=build_server_app(config.to_flower()),
            client_app=simulated_client_app(config, run_dir, list(client_mods)),
            num_supernodes=config.sites,
            backend_config=backend_config(config),
            verbose_logging=verbose,
        )
    except KeyboardInterrupt:
        _stop_ray()
        note_interrupted(run_dir, config)
        raise FederationError(f"interrupted: {run_dir} keeps what had arrived; continue with "
                              f"`coordinator simulate --set run-dir={run_dir} --set resume=true`") from None
    except Exception as exc:  # Flower wraps the ServerApp's exception; the summary holds the reason
        try:
            reason = read_summary(run_dir / SUMMARY_FILE).error
        except SummaryError:  # none written: the run stopped before the ServerApp wrote one
            reason = str(exc)
        raise FederationError(f"simulation did not complete: {reason}") from exc
    finally:
        remove_run_shares(config, run_dir)
    if not (run_dir / SUMMARY_FILE).exists():
        raise FederationError("simulation ended without writing a summary")
    summary = read_summary(run_dir / SUMMARY_FILE)
    if yardstick and summary.pooled and summary.global_model and summary.global_model.num_examples:
        from coordinator.report import write_summary
        from harness.yardstick import random_subset_yardstick

        counts = list(summary.pooled.class_counts.values())
        log.info("scoring a random real subset of the pooled set's size (%d images; simulation only, it is not "
                 "private), trained and corrected as the global model was", sum(counts))
        started = time.perf_counter()
        summary.yardstick = random_subset_yardstick(config, counts)
        summary.stage_seconds["yardstick"] = round(time.perf_counter() - started, 3)
        write_summary(run_dir, summary)
    return run_dir, summary


def note_interrupted(run_dir: Path, config: RunConfig) -> None:
    """Say in the results folder that the run was interrupted (a summary the ServerApp wrote is kept)."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        summary_path.write_text(RunSummary.begun(config, run_dir.name, RunStatus.INTERRUPTED,
                                                 "interrupted by the operator (Ctrl-C)").to_json())
    (run_dir / "INTERRUPTED").write_text(f"interrupted by the operator at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} "
                                         "UTC; bundles received so far are in bundles/\n")


def _stop_ray() -> None:
    """End Ray's workers now, quietly, instead of their tracebacks and a hang after Ctrl-C."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def reopened_bundles(run_dir: Path) -> list[OpenedBundle]:
    """The bundles of a simulated run's last round, opened again from where the run stored them.

    The simulation keys in the run folder open them; a bundle the run rejected stays out again.
    """
    keys = load_coordinator_keys(run_dir / SIMULATION_KEYS / "coordinator")
    state = run_state.RunState.model_validate_json((run_dir / run_state.STATE).read_text())
    bundles = []
    for sealed in run_state.stored_bundles(run_dir, state).values():
        try:
            bundles.append(open_bundle(sealed, keys.private_key, keys.verify_key_for, 1 << 30))
        except InvalidBundle as exc:
            log.warning("%s: a stored bundle is left out (%s)", run_dir.name, exc)
    return bundles


def reopened_pool(run_dir: Path) -> PooledSet:
    """The pooled set of a simulated run's last round (:func:`reopened_bundles`)."""
    return pool(reopened_bundles(run_dir))
