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
4. :func:`run_supernode` runs it. Flower itself retries a dropped link (unlimited by default,
   ``--max-retries``/``--max-wait-time`` bound it); when the process still exits with a connection
   error, it is restarted after a growing pause. Configuration errors are not retried.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import crypto
from shared.errors import ConfigError, DataError, KeyFileError
from shared.flower_env import flower_env, write_flat_toml
from shared.keys import COORDINATOR_PUB, NODE_KEY, SIGNING_KEY, SITE_CA_CERT
from shared.schemas import SiteId, setting_error
from site_agent.data import check_data_path
from site_agent.policy import SitePolicy

log = logging.getLogger(__name__)

SUPERNODE = "flower-supernode"
# Flower's exit codes (flwr.supercore.exit.ExitCode) that a restart cannot fix. The process itself
# exits with status 1 on any error; the code is in its log line "Exit Code: <code>".
CONFIG_EXIT_CODES = {302: "invalid SuperNode auth key", 303: "node auth needs TLS", 304: "invalid trusted entities"}
CONNECTION_ERROR = 305  # the link was lost or refused (also: this node's key is not registered)
_EXIT_CODE_LINE = re.compile(rb"Exit Code: (\d+)")
_BACKOFF_START, _BACKOFF_MAX, _STABLE_SECONDS = 5.0, 120.0, 300.0


class JoinSettings(BaseModel):
    """Everything ``site-agent join`` needs; paths are made absolute (the SuperNode runs with another cwd)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: SiteId
    key_dir: Path
    superlink: str = Field(pattern=r"^\S+:\d{1,5}$", description="the SuperLink's host:port")
    root_certificates: Path | None = None  # default: <key-dir>/superlink-ca.crt
    data: Path | None = None  # the site's images (``site-agent check --data`` reads the same)
    policy_file: Path | None = None
    flwr_home: Path | None = None  # default: <key-dir>/../flwr-home-<site-id>
    port: int = Field(9094, ge=1, le=65535)
    threads: int = Field(1, ge=1, le=1024)
    device: str = "auto"
    max_retries: int | None = Field(None, ge=0)
    max_wait_time: float | None = Field(None, gt=0)
    coordinator_fingerprint: str | None = None
    partition_id: int | None = Field(None, ge=0)  # demos and tests: one share of a public dataset
    num_partitions: int | None = Field(None, ge=1)

    def ca_file(self) -> Path:
        return (self.root_certificates or self.key_dir / SITE_CA_CERT).expanduser().resolve()

    def home(self) -> Path:
        return (self.flwr_home or self.key_dir.parent / f"flwr-home-{self.site_id}").expanduser().resolve()


def preflight(settings: JoinSettings) -> None:
    """Check every local prerequisite of joining; raise the first problem found.

    Raises:
        KeyFileError: key directory, signing key, SuperNode key, coordinator key or CA certificate missing or wrong.
        ConfigError: bad policy file, partition options, or ``flower-supernode`` not installed.
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
    expected = (settings.coordinator_fingerprint or "").strip().lower()
    if expected and crypto.fingerprint(coordinator) != expected:
        raise KeyFileError(f"pinned coordinator key has fingerprint {crypto.fingerprint(coordinator)}, not {expected}",
                           hint="re-pin the coordinator key with `site-agent trust-coordinator`")
    crypto.load_certificate(settings.ca_file())
    if settings.policy_file is not None:
        SitePolicy.from_file(settings.policy_file.expanduser())
    if settings.data is not None:
        _check_data_path(settings.data.expanduser())
    if (settings.partition_id is None) != (settings.num_partitions is None):
        raise ConfigError("--partition-id and --num-partitions go together")
    if settings.partition_id is not None and settings.partition_id >= (settings.num_partitions or 0):
        raise ConfigError(f"--partition-id {settings.partition_id} must be below --num-partitions")
    if shutil.which(SUPERNODE) is None:
        raise ConfigError(f"{SUPERNODE!r} is not on PATH", hint="install this package (it depends on flwr)")


def _check_data_path(path: Path) -> None:
    """The data path holds what the loader reads: MedMNIST files, a .npz export or a folder of class images.

    Raises:
        DataError: nothing at the path, or nothing there that ``site-agent check`` could read.
    """
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    check_data_path(path)  # the loader's own format check, before a request names the dataset


def node_config(settings: JoinSettings) -> dict[str, str | int]:
    """The SuperNode's node config: the site's own facts, read by ``site_agent.settings``."""
    values: dict[str, str | int] = {
        "site-id": settings.site_id,
        "key-dir": str(settings.key_dir.expanduser().resolve()),
        "device": settings.device,
        "cache-dir": str(settings.home() / "cache"),  # site-private working files (e.g. MTT experts)
    }
    if settings.data is not None:
        values["data-root"] = str(settings.data.expanduser().resolve())
    if settings.policy_file is not None:
        values["policy-file"] = str(settings.policy_file.expanduser().resolve())
    if settings.partition_id is not None and settings.num_partitions is not None:
        values.update({"partition-id": settings.partition_id, "num-partitions": settings.num_partitions})
    return values


def write_node_config(settings: JoinSettings) -> Path:
    """Write the node config to ``<flwr-home>/node-config.toml`` and return its path."""
    return write_flat_toml(settings.home() / "node-config.toml", node_config(settings))


def supernode_command(settings: JoinSettings, node_config_file: Path) -> list[str]:
    """The ``flower-supernode`` command line (TLS + node auth, never ``--insecure``)."""
    command = [
        SUPERNODE,
        "--superlink", settings.superlink,
        "--root-certificates", str(settings.ca_file()),
        "--auth-supernode-private-key", str((settings.key_dir / NODE_KEY).expanduser().resolve()),
        "--node-config", str(node_config_file),
        "--host", "127.0.0.1",  # the local Runtime API serves only this machine's ClientApp processes
        "--port", str(settings.port),
    ]
    if settings.max_retries is not None:
        command += ["--max-retries", str(settings.max_retries)]
    if settings.max_wait_time is not None:
        command += ["--max-wait-time", str(settings.max_wait_time)]
    return command


def supernode_env(settings: JoinSettings) -> dict[str, str]:
    """Offline-safe environment with this site's FLWR_HOME and thread limit (inherited by the ClientApp)."""
    return flower_env(settings.home(), threads=settings.threads)


def run_supernode(settings: JoinSettings, restart: bool = True, max_restarts: int | None = None) -> int:
    """Check, then run the SuperNode until it stops cleanly or is stopped; returns 0, or its (Flower) exit code.

    With ``restart``, an exit on a connection error (the link dropped beyond Flower's own retries, or
    the node is not registered yet) starts it again after 5 s, doubling up to 2 min.

    Raises:
        FedDistillError: a preflight check fails, or the SuperNode exits on a configuration error.
    """
    preflight(settings)
    settings.home().mkdir(parents=True, exist_ok=True, mode=0o700)
    command = supernode_command(settings, write_node_config(settings))
    env = supernode_env(settings)
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    backoff, restarts = _BACKOFF_START, 0
    try:
        while True:
            log.info("site %s: starting SuperNode against %s (Runtime API port %d)", settings.site_id,
                     settings.superlink, settings.port)
            started = time.monotonic()
            child = subprocess.Popen(command, env=env, cwd=settings.home(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
            flower_code = relay_output(child.stdout, sys.stdout.buffer)
            status = child.wait()
            if stopping or status == 0:
                return status
            if flower_code in CONFIG_EXIT_CODES:
                raise ConfigError(f"SuperNode exited with Flower code {flower_code} ({CONFIG_EXIT_CODES[flower_code]})")
            code = flower_code if flower_code is not None else status
            if not restart or (max_restarts is not None and restarts >= max_restarts):
                return code
            if time.monotonic() - started > _STABLE_SECONDS:
                backoff = _BACKOFF_START  # it ran fine for a while: this is a new outage
            why = "lost or refused connection (is this node registered?)" if code == CONNECTION_ERROR else f"code {code}"
            log.warning("site %s: SuperNode stopped (%s); restarting in %.0f s", settings.site_id, why, backoff)
            _sleep_unless(lambda: stopping, backoff)
            if stopping:
                return code
            backoff, restarts = min(backoff * 2, _BACKOFF_MAX), restarts + 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def relay_output(stream: IO[bytes] | None, out: IO[bytes]) -> int | None:
    """Copy the SuperNode's output to ours line by line; returns the last Flower exit code it logged."""
    code = None
    for line in iter(stream.readline, b"") if stream is not None else ():
        out.write(line)
        out.flush()
        if match := _EXIT_CODE_LINE.search(line):
            code = int(match.group(1))
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
