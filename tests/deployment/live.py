"""Real processes for the deployment tests: a live federation on 127.0.0.1, and stopping all that was started.

:class:`LiveFederation` starts processes with exactly the commands ``coordinator serve`` and
``site-agent join`` build: a SuperLink with TLS, node authentication and a state database, and one
SuperNode per site, each with its own keys registered in the coordinator's trust store.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator import control
from coordinator.superlink import SuperLinkSettings, superlink_command, superlink_env
from coordinator.tls import issue_tls
from coordinator.trust import record_flower_node, register_node_key, register_site
from harness.sites import split_shares, write_export
from shared import crypto
from shared.config import RunConfig
from shared.keys import (
    COORDINATOR_PUB,
    NODE_PUB,
    SIGNING_PUB,
    SITE_CA_CERT,
    create_coordinator_key,
    create_site_identity,
)
from shared.schemas import PartitionScheme
from site_agent import app_pins, join, peers
from site_agent.policy import SitePolicy

PROJECT = Path(__file__).resolve().parents[2]
# The smallest honest round: ipc 1, two iterations, a tiny network.
TINY = {"dataset": "breastmnist", "sites": 3, "min-sites": 2, "ipc": 1, "iterations": 2, "batch-real": 16,
        "outer-loop": 1, "inner-loop": 1, "net-width": 16, "train-epochs": 10, "node-wait-timeout": 60.0,
        "distill-timeout": 240.0, "evaluate-timeout": 120.0,
        "imbalance": "tuned-logit-adjust"}  # not the default: so query.tune crosses a real SuperLink too


def app_snapshot(root: Path) -> Path:
    """A copy of this project's app folder: the package the sites pin is exactly the one the test submits."""
    folder = root / "app"
    for package in ("shared", "site_agent", "coordinator"):
        shutil.copytree(PROJECT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(PROJECT / name, folder / name)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc), children first found first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Processes:
    """Processes this test started; ``stop`` ends each one and its descendants by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir, self.started = log_dir, []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")  # a restarted process appends
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def start_site(self, name: str, settings: join.JoinSettings) -> tuple[subprocess.Popen, subprocess.Popen]:
        """A site's SuperNode and its task runner, each in a group of its own, as `site-agent join` starts them."""
        command = join.supernode_command(settings, join.write_node_config(settings))
        join.write_secret(settings)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            node, runner = join.start_group(command, join.runner_command(settings), join.supernode_env(settings),
                                            settings.home(), log.fileno())
        self.started += [node, runner]
        return node, runner

    def stop(self) -> None:
        pids = [pid for proc in self.started for pid in [proc.pid, *descendants(proc.pid)]]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.started:
            proc.wait(timeout=10)




def named_descendants(pid: int, name: str) -> list[int]:
    """The descendants of ``pid`` whose command line contains ``name`` (e.g. ``flwr-clientapp``)."""
    found = []
    for child in descendants(pid):
        try:
            if name in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                found.append(child)
        except OSError:
            continue
    return found


def working_in(folder: Path) -> list[int]:
    """The processes whose working directory is ``folder`` or below it (what a script started there left)."""
    found, root = [], folder.resolve()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = (entry / "cwd").resolve(strict=True)
            except OSError:
                continue
            if cwd == root or root in cwd.parents:
                found.append(int(entry.name))
    return found


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def site_key_dir(root: Path, coord: Path, name: str) -> Path:
    """A site key directory as `site-agent init` + `trust-coordinator` + the CA copy leave it."""
    key_dir = root / name
    create_site_identity(key_dir)
    (key_dir / COORDINATOR_PUB).write_bytes((coord / COORDINATOR_PUB).read_bytes())
    (key_dir / SITE_CA_CERT).write_bytes((coord / "tls" / "ca.crt").read_bytes())
    return key_dir


@dataclass
class LiveFederation:
    """A coordinator's keys, a SuperLink and the sites' key directories under ``root``; processes are started on demand."""

    root: Path
    processes: Processes
    data_root: Path
    sites: dict[str, Path]
    link: SuperLinkSettings
    conn: control.Connection
    app: Path  # the app folder runs are submitted from (a snapshot: what the sites pinned)
    policy_file: Path | None = None  # every site's policy (default: the built-in one)
    superlink: subprocess.Popen | None = None
    supernodes: dict[str, subprocess.Popen] = field(default_factory=dict)
    runners: dict[str, subprocess.Popen] = field(default_factory=dict)  # sites started by start_supernode

    @classmethod
    def create(cls, root: Path, processes: Processes, data_root: Path, names: list[str],
               registered: list[str] | None = None, policy: SitePolicy | None = None) -> LiveFederation:
        """Keys for the coordinator and each site; ``registered`` (default: all) enter the trust store."""
        coord = root / "coord"
        create_coordinator_key(coord)
        issue_tls(coord, [])
        sites = {name: site_key_dir(root, coord, name) for name in names}
        app = app_snapshot(root)
        for name, key_dir in sites.items():  # each site consents to this project's app package, as a study's sites
            app_pins.pin(key_dir, control.app_hash(app), note="live test")  # would, and pins its peers' keys
            for peer, peer_dir in sites.items():
                if peer != name:
                    peers.pin_peer_key(key_dir, peer, crypto.load_public_key(peer_dir / SIGNING_PUB, crypto.VerifyKey))
        for name in names if registered is None else registered:
            register_site(coord, name, sites[name] / SIGNING_PUB)
            register_node_key(coord, name, sites[name] / NODE_PUB)
        link = SuperLinkSettings(keys_dir=coord, state_dir=root / "link", host="127.0.0.1", port=free_port(), threads=1)
        conn = control.Connection(f"127.0.0.1:{link.port}", coord / "tls" / "ca.crt", root / "operator-home")
        policy_file = None
        if policy is not None:
            policy_file = root / "policy.json"
            policy_file.write_text(policy.model_dump_json())
        return cls(root, processes, data_root, sites, link, conn, app, policy_file)

    @property
    def coord(self) -> Path:
        return self.link.keys_dir

    def start_superlink(self) -> None:
        """Start (or restart, on the same state database) the SuperLink and wait until it listens."""
        self.link.flwr_home().mkdir(parents=True, exist_ok=True)
        self.superlink = self.processes.start("superlink", superlink_command(self.link), superlink_env(self.link))
        wait_for_port(self.link.port, 60)

    def stop_superlink(self) -> None:
        """SIGKILL the SuperLink and every process it started (its SuperExec and a running ServerApp)."""
        assert self.superlink is not None
        for pid in [self.superlink.pid, *descendants(self.superlink.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.superlink.wait(timeout=30)
        deadline = time.monotonic() + 30
        while process_group(self.superlink.pid) and time.monotonic() < deadline:
            time.sleep(0.2)

    def register_nodes(self, names: list[str]) -> None:
        """Register the sites' SuperNode keys with the SuperLink (before they connect)."""
        for name in names:  # as `coordinator sites add --superlink` does
            record_flower_node(self.coord, name, control.register_node(self.conn, self.sites[name] / NODE_PUB, name))

    def export(self, index: int, num_partitions: int) -> Path:
        """Share ``index`` of BreastMNIST split ``num_partitions`` ways (IID), as the hospital's own .npz export."""
        path = self.root / "data" / f"share-{index}-of-{num_partitions}.npz"
        if not path.exists():
            shares = split_shares("breastmnist", str(self.data_root), num_partitions, PartitionScheme.IID, 0.5, 0)
            write_export(shares[index].images, path)
        return path

    def join_settings(self, name: str, index: int, num_partitions: int, claims: str | None = None,
                      **extra: Any) -> join.JoinSettings:
        return join.JoinSettings(site_id=claims or name, key_dir=self.sites[name], superlink=self.conn.address,
                                 data=self.export(index, num_partitions), dataset="breastmnist",
                                 flwr_home=self.root / f"home-{name}", cache_dir=self.root / f"home-{name}" / "cache",
                                 port=free_port(), threads=1,
                                 policy_file=self.policy_file, **{"max_retries": 2, **extra})

    def start_supernode(self, name: str, index: int, num_partitions: int, claims: str | None = None,
                        **extra: Any) -> subprocess.Popen:
        """The SuperNode `site-agent join` would run for this site (log: ``<root>/<name>.log``)."""
        settings = self.join_settings(name, index, num_partitions, claims, **extra)
        join.preflight(settings)
        settings.home().mkdir(parents=True, exist_ok=True)
        proc, self.runners[name] = self.processes.start_site(name, settings)
        self.supernodes[name] = proc
        return proc

    def answering(self, name: str) -> list[int]:
        """The site's processes answering a message right now (``site_agent.task``, under its runner or its join)."""
        root = self.runners.get(name) or self.supernodes[name]
        return named_descendants(root.pid, "site_agent.task")

    def signal_site(self, name: str, signum: int) -> None:
        """Signal every process of a site started by :meth:`start_supernode`: its SuperNode's and runner's groups."""
        for proc in (self.supernodes[name], self.runners[name]):
            os.killpg(proc.pid, signum)

    def start_join(self, name: str, index: int, num_partitions: int) -> subprocess.Popen:
        """``site-agent join`` itself for this site, restarting its SuperNode as it would at a hospital."""
        settings = self.join_settings(name, index, num_partitions)
        command = ["site-agent", "join", "--site-id", name, "--key-dir", str(settings.key_dir),
                   "--superlink", settings.superlink, "--data", str(settings.data), "--dataset", str(settings.dataset),
                   "--flwr-home", str(settings.home()), "--cache-dir", str(settings.cache()),
                   "--port", str(settings.port), "--threads", "1"]
        if self.policy_file is not None:
            command += ["--policy", str(self.policy_file)]
        proc = self.processes.start(f"join-{name}", command, dict(os.environ))
        self.supernodes[name] = proc
        return proc

    def submit(self, **overrides: Any) -> int:
        """Start a run of the TINY settings (kebab-case ``overrides``); returns its Flower run id."""
        values = {**TINY, "keys-dir": str(self.coord), "out-dir": str(self.out_dir), **overrides}
        run_id = control.submit_run(self.conn, self.app, control.write_run_config(
            self.conn, RunConfig.from_flower(values), f"live-{time.monotonic_ns()}"))
        control.record_run(self.conn, run_id, str(self.out_dir / f"run-{run_id}"))  # as `coordinator run` does
        return run_id

    def coordinator(self, *args: str) -> subprocess.CompletedProcess:
        """The `coordinator` command against this SuperLink, as the operator runs it."""
        return subprocess.run(["coordinator", *args, "--superlink", self.conn.address, "--root-certificates",
                               str(self.conn.root_certificates), "--flwr-home", str(self.conn.flwr_home)],
                              capture_output=True, text=True, check=False)

    @property
    def out_dir(self) -> Path:
        return self.root / "results"

    def wait(self, run_id: int, timeout: float = 300) -> str:
        """The run's final status (or its last one after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while not (status := control.run_status(self.conn, run_id)).startswith("finished") and time.monotonic() < deadline:
            time.sleep(2)
        return status

    def logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace")[-3000:] for p in self.root.glob("*.log")}
