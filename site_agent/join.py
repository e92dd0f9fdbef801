"""``site-agent join``: connect this hospital's SuperNode to the coordinator's SuperLink, and keep it connected.

The pieces, in order:

1. :func:`preflight` checks everything the SuperNode will need (key directory, signing key, SuperNode
   key, pinned coordinator key, the study CA, policy file, data path) and fails with one clear
   error *before* anything starts: a site that would fail at its first request fails at start instead.
2. :func:`write_node_config` writes the site's facts (site id, key and data locations, policy file)
   into a TOML file that ``flower-supernode --node-config`` reads; a file avoids quoting paths.
3. :func:`supernode_command` / :func:`supernode_env` build the exact process: TLS against the study
   CA (``--root-certificates``), node authentication (``--auth-supernode-private-key``), its own
   ``--port`` for the local Runtime API and its own ``FLWR_HOME``, offline-safe and thread-bounded.
   The SuperNode runs with ``--isolation process``: it runs no app code of its own.
4. :func:`run_supernode` runs it in a process group of its own, with the site's own executor beside it
   (``site_agent.task_runner``, which answers each message with the site agent installed here, and only
   for app packages this site pinned: ``site_agent.app_pins``). The group holds everything that serves
   the site (the SuperNode, the runner, the task process that distills): a stop signal or the death of
   the SuperNode or the runner ends the whole group, so nothing goes on distilling unowned.
   Flower itself retries a dropped link (unlimited by default, ``--max-retries``/``--max-wait-time``
   bound it); when the process still exits (a connection error, or it died), it is restarted after a
   growing pause. Configuration errors are not retried.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import crypto
from shared.errors import ConfigError, DataError, KeyFileError
from shared.fields import SiteId, setting_error
from shared.flower_env import flower_env, flower_executable, write_flat_toml
from shared.keys import COORDINATOR_PUB, NODE_KEY, SIGNING_KEY, SITE_CA_CERT
from shared.logs import chosen_level, readable_flower_line
from site_agent.app_pins import load_pins
from site_agent.check import check_data
from site_agent.policy import SitePolicy
from site_agent.settings import default_cache_dir

log = logging.getLogger(__name__)

SUPERNODE = "flower-supernode"
# Flower's exit codes (flwr.supercore.exit.ExitCode) that a restart cannot fix. The process itself
# exits with status 1 on any error; the code is in its log line "Exit Code: <code>".
CONFIG_EXIT_CODES = {302: "invalid SuperNode auth key", 303: "node auth needs TLS", 304: "invalid trusted entities"}
CONNECTION_ERROR = 305  # the link was lost or refused (also: this node's key is not registered)
_EXIT_CODE_LINE = re.compile(rb"Exit Code: (\d+)")
_NODE_ID_LINE = re.compile(rb"SuperNode ID: (\d+)")  # Flower's INFO line once the SuperLink has let the node in
_BACKOFF_START, _BACKOFF_MAX, _STABLE_SECONDS = 5.0, 120.0, 300.0
_POLL_SECONDS = 0.5  # how soon a dead SuperNode is noticed
_GROUP_GRACE_SECONDS = 10.0  # how long the group gets to stop on SIGTERM before it is killed


class JoinSettings(BaseModel):
    """Everything ``site-agent join`` needs; paths are made absolute (the SuperNode runs with another cwd)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: SiteId
    key_dir: Path
    superlink: str = Field(pattern=r"^\S+:\d{1,5}$", description="the SuperLink's host:port")
    root_certificates: Path | None = None  # default: <key-dir>/superlink-ca.crt
    data: Path | None = None  # the site's images (``site-agent check --data`` reads the same)
    dataset: str | None = None  # the MedMNIST flag they follow (``site-agent check --dataset``)
    policy_file: Path | None = None
    flwr_home: Path | None = None  # default: <key-dir>/../flwr-home-<site-id>
    cache_dir: Path | None = None  # default: site_agent.settings.default_cache_dir, which the review commands read
    port: int = Field(9094, ge=1, le=65535)
    threads: int = Field(1, ge=1, le=1024)
    device: str = "auto"
    max_retries: int | None = Field(None, ge=0)
    max_wait_time: float | None = Field(None, gt=0)
    coordinator_fingerprint: str | None = None

    def ca_file(self) -> Path:
        return (self.root_certificates or self.key_dir / SITE_CA_CERT).expanduser().resolve()

    def home(self) -> Path:
        return (self.flwr_home or self.key_dir.parent / f"flwr-home-{self.site_id}").expanduser().resolve()

    def cache(self) -> Path:
        """The site's private cache: ``--cache-dir``, else the default the review commands read too."""
        if self.cache_dir is not None:
            return self.cache_dir.expanduser().resolve()
        earlier = self.home() / "cache"  # where join kept it before: its budgets and audit log carry on there
        return earlier if earlier.is_dir() else default_cache_dir(self.site_id).resolve()


def preflight(settings: JoinSettings) -> None:
    """Check every local prerequisite of joining; raise the first problem found.

    Raises:
        KeyFileError: key directory, signing key, SuperNode key, coordinator key or CA certificate missing or wrong.
        ConfigError: bad policy file or pins file, or ``flower-supernode`` not installed.
        DataError: the data path does not exist or holds nothing the loader reads.
    """
    key_dir = settings.key_dir.expanduser()
    if not key_dir.is_dir():
        raise KeyFileError(f"key directory {str(key_dir)!r} does not exist",
                           hint=f"create the site's keys with `site-agent init --key-dir {key_dir}`")
    crypto.load_private_key(key_dir / SIGNING_KEY, crypto.SigningKey)
    crypto.load_node_private_key(key_dir / NODE_KEY)
    try:
        coordinator = crypto.load_public_key(key_dir / COORDINATOR_PUB, crypto.RecipientPublicKey)
    except KeyFileError as exc:
        raise KeyFileError(f"pinned coordinator key: {exc}",
                           hint="pin it with `site-agent trust-coordinator` and the fingerprint read out of band") from exc
    expected = settings.coordinator_fingerprint
    if expected and not crypto.matches_fingerprint(crypto.fingerprint(coordinator), expected):
        raise KeyFileError("the pinned coordinator key does not have the fingerprint --coordinator-fingerprint gives",
                           hint="re-pin the coordinator key with `site-agent trust-coordinator`")
    crypto.load_certificate(settings.ca_file())
    policy = SitePolicy.from_file(settings.policy_file.expanduser()) if settings.policy_file else SitePolicy()
    _check_data(settings, policy)
    flower_executable(SUPERNODE)
    pins = load_pins(key_dir)
    if not pins.apps:
        log.warning("no app package is pinned: every run will be refused until the site pins its study's package "
                    "(`site-agent apps pin --key-dir %s --fab-hash <sha256 from the coordinating team>`)", key_dir)
    for app in pins.apps:
        log.info("serving runs of the pinned app package %s%s", app.fab_hash, f" ({app.note})" if app.note else "")


def _check_data(settings: JoinSettings, policy: SitePolicy) -> None:
    """The data passes ``site-agent check``: it reads, and the policy lets at least one class be distilled.

    Raises:
        ConfigError: no ``--data``, or a data format that needs ``--dataset`` without it.
        DataError: the data is missing, unreadable, or unfit (the check's problems, listed).
    """
    if settings.data is None:
        raise ConfigError("no --data: a site needs its images to distill",
                          hint="give --data, the path `site-agent check --data` reads")
    path = settings.data.expanduser()
    again = f"`site-agent check --data {path}" + (f" --dataset {settings.dataset}`" if settings.dataset else "`")
    report = check_data(path, settings.dataset, policy)
    if report.problems:
        raise DataError("the data is not fit to distill: " + "; ".join(report.problems),
                        hint=f"{again} shows the full report")


def node_config(settings: JoinSettings) -> dict[str, str | int]:
    """The SuperNode's node config: the site's own facts, read by ``site_agent.settings``."""
    values: dict[str, str | int] = {
        "site-id": settings.site_id,
        "key-dir": str(settings.key_dir.expanduser().resolve()),
        "device": settings.device,
        "cache-dir": str(settings.cache()),  # site-private: audit log, budgets, held releases, MTT experts
    }
    if settings.data is not None:
        values["data-root"] = str(settings.data.expanduser().resolve())
    if settings.policy_file is not None:
        values["policy-file"] = str(settings.policy_file.expanduser().resolve())
    return values


def write_node_config(settings: JoinSettings) -> Path:
    """Write the node config to ``<flwr-home>/node-config.toml`` and return its path."""
    return write_flat_toml(settings.home() / "node-config.toml", node_config(settings))


def secret_file(settings: JoinSettings) -> Path:
    """The secret the SuperNode and the site's runner share, so only the runner may take the site's tasks."""
    return settings.home() / "superexec.secret"


def write_secret(settings: JoinSettings) -> Path:
    """A fresh secret for this start (0600); returns its path."""
    path = secret_file(settings)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(os.urandom(32))
    return path


def supernode_command(settings: JoinSettings, node_config_file: Path) -> list[str]:
    """The ``flower-supernode`` command line (TLS + node auth, never ``--insecure``; process isolation)."""
    command = [
        flower_executable(SUPERNODE),
        "--superlink", settings.superlink,
        "--root-certificates", str(settings.ca_file()),
        "--auth-supernode-private-key", str((settings.key_dir / NODE_KEY).expanduser().resolve()),
        "--node-config", str(node_config_file),
        "--host", "127.0.0.1",  # the local Runtime API serves only this machine's ClientApp processes
        "--port", str(settings.port),
        # The SuperNode runs no app code: the site's runner (runner_command) answers every message.
        "--isolation", "process",
        "--superexec-auth-secret-file", str(secret_file(settings)),
    ]
    if settings.max_retries is not None:
        command += ["--max-retries", str(settings.max_retries)]
    if settings.max_wait_time is not None:
        command += ["--max-wait-time", str(settings.max_wait_time)]
    return command


def runner_command(settings: JoinSettings) -> list[str]:
    """The site's own executor beside the SuperNode (``site_agent.task_runner``), this interpreter's site agent."""
    return [sys.executable, "-m", "site_agent.task_runner", "--runtime-api-address", f"127.0.0.1:{settings.port}",
            "--secret-file", str(secret_file(settings)), "--parent-pid", str(os.getpid())]


def supernode_env(settings: JoinSettings) -> dict[str, str]:
    """Offline-safe environment with this site's FLWR_HOME and thread limit (inherited by the ClientApp)."""
    return flower_env(settings.home(), threads=settings.threads)


def run_supernode(settings: JoinSettings, restart: bool = True, max_restarts: int | None = None) -> int:
    """Check, then run the SuperNode until it stops cleanly or is stopped; returns 0, or its (Flower) exit code.

    SIGTERM or SIGINT stops the SuperNode's and the runner's process groups (with any task process
    still distilling) and returns 0. With ``restart``, a SuperNode that exits on a connection error
    (the link dropped beyond Flower's own retries, or the node is not registered yet) or dies is
    started again after 5 s, doubling up to 2 min; what it left running is stopped first.

    Raises:
        FedDistillError: a preflight check fails, or the SuperNode exits on a configuration error.
    """
    preflight(settings)
    settings.home().mkdir(parents=True, exist_ok=True, mode=0o700)
    cache = settings.cache()
    found_by = f"--site-id {settings.site_id}" if cache == default_cache_dir(settings.site_id).resolve() else \
        f"--cache-dir {cache}"
    log.info("site %s: its audit log, held releases and budgets are in %s (site-agent review, history and audit read "
             "them with %s)", settings.site_id, cache, found_by)
    command = supernode_command(settings, write_node_config(settings))
    env = supernode_env(settings)
    stop_signal: int | None = None
    group: tuple[subprocess.Popen[bytes], ...] = ()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stop_signal
        stop_signal = signum
        for process in group:
            _signal_group(process.pid, signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    backoff, restarts = _BACKOFF_START, 0
    try:
        while True:
            log.info("site %s: starting SuperNode against %s (Runtime API port %d)", settings.site_id,
                     settings.superlink, settings.port)
            started = time.monotonic()
            write_secret(settings)  # a new one each start: a runner left from before cannot take tasks
            read_end, write_end = os.pipe()
            try:
                group = start_group(command, runner_command(settings), env, settings.home(), write_end)
            finally:
                os.close(write_end)  # the groups hold it; the pipe ends when the last of them exits
            status, flower_code = _supervise(*group, os.fdopen(read_end, "rb"))
            if stop_signal is not None:
                log.warning("site %s: stopped by %s; the SuperNode and every process it started have exited",
                            settings.site_id, signal.Signals(stop_signal).name)
                return 0
            if status == 0:
                return 0
            if flower_code in CONFIG_EXIT_CODES:
                raise ConfigError(f"SuperNode exited with Flower code {flower_code} ({CONFIG_EXIT_CODES[flower_code]})")
            code = flower_code if flower_code is not None else status
            if not restart or (max_restarts is not None and restarts >= max_restarts):
                log.error("site %s: SuperNode %s; not restarting", settings.site_id, _exit_reason(status, code))
                return code
            if time.monotonic() - started > _STABLE_SECONDS:
                backoff = _BACKOFF_START  # it ran fine for a while: this is a new outage
            log.warning("site %s: SuperNode %s; restarting in %.0f s", settings.site_id, _exit_reason(status, code),
                        backoff)
            _sleep_unless(lambda: stop_signal is not None, backoff)
            if stop_signal is not None:
                return 0
            backoff, restarts = min(backoff * 2, _BACKOFF_MAX), restarts + 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_group(
    command: list[str], runner: list[str], env: dict[str, str], cwd: Path, output: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Start the SuperNode and the site's runner, each in a process group of its own, both writing to ``output``.

    Whatever either starts (the runner's task processes) stays in its group, so :func:`stop_groups` on the
    two pids ends it all. (One group cannot hold both: a process joins only a group of its own session.)
    """
    node = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        executor = subprocess.Popen(runner, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    except OSError:
        stop_groups(node.pid)
        raise
    return node, executor


def _supervise(
    child: subprocess.Popen[bytes], runner: subprocess.Popen[bytes], output: IO[bytes]
) -> tuple[int, int | None]:
    """Relay the groups' output until the SuperNode or the runner exits, then end what is left of both groups.

    Returns the SuperNode's exit status (a signal's, negative, when it was stopped because the runner died)
    and the last Flower exit code it logged. The output is relayed on a thread: the pipe stays open while
    any process of the groups lives, so reading it to its end would not notice a death.
    """
    codes: list[int | None] = [None]
    relay = threading.Thread(target=lambda: codes.__setitem__(0, relay_output(output, sys.stdout.buffer)),
                             daemon=True)
    relay.start()
    while (status := child.poll()) is None and runner.poll() is None:
        time.sleep(_POLL_SECONDS)
    if status is None:
        log.error("the site's task runner exited (status %s): stopping the SuperNode", runner.returncode)
    stop_groups(child.pid, runner.pid, children=(child, runner))
    status = child.wait() if status is None else status
    runner.wait()
    relay.join(timeout=5)
    output.close()
    return status, codes[0]


def stop_groups(
    *pgids: int, grace: float = _GROUP_GRACE_SECONDS, children: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """SIGTERM every process left in the groups, then SIGKILL whatever has not exited after ``grace`` s.
    ``children`` (our own, in those groups) are reaped as they exit: a zombie would keep its group alive."""
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_group_alive(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.1)
        for child in children:
            child.poll()
    for pgid in pgids:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group has already gone


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _exit_reason(status: int, code: int) -> str:
    if status < 0:
        return f"died ({signal.Signals(-status).name})"
    if code == CONNECTION_ERROR:
        return "stopped (lost or refused connection: is this node registered?)"
    return f"stopped (code {code})"


def relay_output(stream: IO[bytes] | None, out: IO[bytes], lowest: int | None = None) -> int | None:
    """Copy the SuperNode's output to ours line by line, our site agent's lines and Flower's from ``lowest`` up
    (default: WARNING, or DEBUG under ``--log-level debug``); returns the last Flower exit code it logged."""
    lowest = lowest if lowest is not None else (logging.DEBUG if chosen_level() == logging.DEBUG else logging.WARNING)
    code = None
    for line in iter(stream.readline, b"") if stream is not None else ():
        if match := _EXIT_CODE_LINE.search(line):
            code = int(match.group(1))
        if match := _NODE_ID_LINE.search(line):  # said in our words, as Flower's INFO lines are not relayed
            log.info("SuperNode is in: the SuperLink accepted it as node %s; waiting for requests", match.group(1).decode())
        shown = readable_flower_line(line.decode(errors="replace"), lowest)
        if shown is not None:
            out.write(shown.encode() + b"\n")
            out.flush()
    return code


def _sleep_unless(stopped: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.2)



def settings_from_options(values: dict[str, object]) -> JoinSettings:
    """Command-line options -> settings; a bad value becomes a ConfigError naming the option.

    Raises:
        ConfigError: an option is out of range or malformed.
    """
    try:
        return JoinSettings(**values)
    except ValidationError as exc:
        raise setting_error(exc, "option --{key}: {msg}") from None
