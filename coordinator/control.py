"""The operator's side of the SuperLink: Flower's ``flwr`` CLI against a named connection.

The connection (address + study CA) is written into a project-local ``FLWR_HOME/config.toml``
(default ``<app-dir>/.flwr-home``), never into ``pyproject.toml``: ``flwr run`` rewrites a
pyproject that carries ``[tool.flwr.federations]``, so we refuse to run on one that does.
Run settings go to ``flwr run`` as a TOML file (``--run-config <file>``), so paths need no quoting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import RunConfig
from shared.errors import ConfigError, FedDistillError
from shared.flower_env import dump_toml, flower_env, flower_executable, write_flat_toml
from shared.logs import chosen_level, readable_flower_line

CONNECTION = "feddistill"
RUNS = "feddistill-runs.json"  # Flower run id -> results folder on the SuperLink host
FLWR = "flwr"


class ControlError(FedDistillError):
    """A ``flwr`` command against the SuperLink failed."""

    hint = "check that the SuperLink is up (coordinator serve) and that the connection's address and CA are right"


@dataclass(frozen=True)
class Connection:
    """A SuperLink as the ``flwr`` CLI knows it: a name in ``<flwr_home>/config.toml``."""

    address: str
    root_certificates: Path
    flwr_home: Path
    name: str = CONNECTION

    def env(self) -> dict[str, str]:
        return flower_env(self.flwr_home)


def write_connection(conn: Connection) -> Path:
    """Add (or update) this connection in ``<flwr_home>/config.toml``, keeping any others; returns the file."""
    path = conn.flwr_home / "config.toml"
    config: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = config.setdefault("superlink", {})
    superlink.setdefault("default", conn.name)
    superlink[conn.name] = {"address": conn.address, "root-certificates": str(conn.root_certificates.resolve())}
    conn.flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(dump_toml(config))
    return path


def flwr(conn: Connection, *args: str, timeout: float = 120.0) -> str:
    """Run ``flwr <args>`` with this connection's FLWR_HOME; returns stdout.

    Raises:
        ControlError: the command failed (its last output lines in the message).
    """
    write_connection(conn)
    try:
        done = subprocess.run([flower_executable(FLWR), *args], check=False, env=conn.env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ControlError(f"`flwr {args[0]}` did not answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        detail = " ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise ControlError(f"`flwr {' '.join(args[:2])}` failed (exit {done.returncode}): {detail}")
    return done.stdout


def flwr_json(conn: Connection, *args: str) -> dict[str, Any]:
    """``flwr <args> --format json``, parsed.

    Raises:
        ControlError: the command failed or did not print JSON.
    """
    out = flwr(conn, *args, "--format", "json")
    try:
        answer = json.loads(out[out.index("{"):])
    except ValueError as exc:
        raise ControlError(f"`flwr {args[0]}` printed no JSON") from exc
    if answer.get("success") is False:  # flwr exits 0 with {"success": false} when, e.g., the SuperLink is down
        detail = str(answer.get("error-message", "")).strip().splitlines()
        if any("unavailable" in line.lower() for line in detail):
            raise ControlError(f"the SuperLink at {conn.address} cannot be reached",
                               hint="start it (`coordinator serve`) or check --superlink and the connection's CA")
        raise ControlError(f"`flwr {' '.join(args[:2])}` failed: {' '.join(detail[-2:])}")
    return answer


def register_node(conn: Connection, node_public_key: Path, site_id: str) -> int:
    """Register a site's SuperNode key with the SuperLink under the site id; returns Flower's node id."""
    answer = flwr_json(conn, "supernode", "register", str(node_public_key.resolve()), conn.name, "--name", site_id)
    return int(answer["node-id"])


def unregister_node(conn: Connection, node_id: int) -> None:
    """Unregister a node from the SuperLink: it can no longer connect."""
    flwr(conn, "supernode", "unregister", str(node_id), conn.name)


def node_statuses(conn: Connection) -> dict[int, str]:
    """Each registered node's status on the SuperLink (online, offline, registered: never connected)."""
    nodes = flwr_json(conn, "supernode", "ls", conn.name).get("nodes", [])
    return {int(node["node-id"]): str(node.get("status", "")) for node in nodes if str(node.get("node-id", "")).isdigit()}


def list_runs(conn: Connection, run_id: int | None = None) -> list[dict[str, Any]]:
    """Runs on the SuperLink with status and timings (``flwr ls``)."""
    args = ["ls", conn.name] + (["--run-id", str(run_id)] if run_id is not None else [])
    return list(flwr_json(conn, *args).get("runs", []))


def check_app_dir(app_dir: Path) -> Path:
    """The Flower app folder ``flwr run`` packages; refuses a pyproject that ``flwr run`` would rewrite.

    Raises:
        ConfigError: no pyproject.toml with ``[tool.flwr.app]``, or one with ``[tool.flwr.federations]``.
    """
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigError(f"{str(app_dir)!r} holds no pyproject.toml (run from the feddistill project folder or "
                          "pass --app-dir)")
    flwr_tool = tomllib.loads(pyproject.read_text()).get("tool", {}).get("flwr", {})
    if "app" not in flwr_tool:
        raise ConfigError(f"{pyproject} has no [tool.flwr.app] section")
    if "federations" in flwr_tool:
        raise ConfigError(f"{pyproject} has a [tool.flwr.federations] section, which `flwr run` would move out of "
                          "the file; remove it (connections live in FLWR_HOME/config.toml)")
    return app_dir.resolve()


def app_hash(app_dir: Path) -> str:
    """The SHA-256 of the app package (FAB) ``flwr run`` submits from ``app_dir``: the hash sites pin.

    Flower builds the package deterministically (sorted files, fixed dates), so the same files give the same hash.

    Raises:
        ConfigError: ``app_dir`` is not a Flower app folder we run from (see :func:`check_app_dir`).
    """
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(check_app_dir(app_dir))).hexdigest()


def write_run_config(conn: Connection, config: RunConfig, name: str) -> Path:
    """The run's settings as the TOML file ``flwr run --run-config`` reads (checked locally first)."""
    return write_flat_toml(conn.flwr_home / "run-configs" / f"{name}.toml", config.to_flower())


def run_args(conn: Connection, app_dir: Path, run_config_file: Path) -> list[str]:
    """``flwr`` arguments that start a run: ``run <app-dir> <connection> --run-config <file>``."""
    return ["run", str(app_dir), conn.name, "--run-config", str(run_config_file)]


def submit_run(conn: Connection, app_dir: Path, run_config_file: Path) -> int:
    """Start a run on the SuperLink; returns Flower's run id."""
    return int(flwr_json(conn, *run_args(conn, app_dir, run_config_file))["run-id"])


def log_command(conn: Connection, run_id: int) -> list[str]:
    """``flwr log <run-id> <connection> --stream``: follows the ServerApp's log until the run ends."""
    return [flower_executable(FLWR), "log", str(run_id), conn.name, "--stream"]


def follow_log(conn: Connection, run_id: int) -> int:
    """Print the run's log as it comes (``flwr log --stream``), without Flower's empty lines and (unless the
    command line chose ``--log-level debug``) its DEBUG ones; returns its exit code."""
    lowest = logging.DEBUG if chosen_level() == logging.DEBUG else logging.INFO
    with subprocess.Popen(log_command(conn, run_id), env=conn.env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as stream:
        assert stream.stdout is not None
        for line in stream.stdout:
            if (shown := readable_flower_line(line, lowest)) is not None:
                print(shown, flush=True)
    return stream.returncode


def record_run(conn: Connection, run_id: int, results_dir: str) -> None:
    """Remember where a run writes its results (on the SuperLink host), for ``coordinator status``."""
    path = conn.flwr_home / RUNS
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[str(run_id)] = results_dir
    path.write_text(json.dumps(runs, indent=2) + "\n")


def results_dir_of(conn: Connection, run_id: int | str) -> str | None:
    path = conn.flwr_home / RUNS
    return json.loads(path.read_text()).get(str(run_id)) if path.exists() else None


def run_status(conn: Connection, run_id: int) -> str:
    """A run's status as ``flwr ls`` reports it (``finished:completed``, ``running``, ...)."""
    runs = list_runs(conn, run_id)
    return str(runs[0].get("status", "unknown")) if runs else "unknown"
