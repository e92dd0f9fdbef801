"""The site's own executor beside its SuperNode: ``python -m site_agent.task_runner --runtime-api-address A ...``.

``site-agent join`` runs the SuperNode with ``--isolation process``, so the SuperNode runs nothing
itself, and starts this runner in the SuperNode's process group. It takes each ClientApp task the
SuperNode queues (signing the request with the secret only ``join`` and the SuperNode share, so no other
local process can take the site's tasks) and starts ``site_agent.task`` for it: the hospital's installed
code, which refuses runs of app packages the site has not pinned.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.logs import configure_logging
from site_agent import flower_runtime

log = logging.getLogger(__name__)

_POLL_SECONDS = 1.0  # as Flower's own executor polls
_RETRY_SECONDS = 3.0  # while the SuperNode's Runtime API is not up yet


def task_command(address: str, token: str) -> list[str]:
    """The process that answers one message: this interpreter, this site agent."""
    return [sys.executable, "-m", "site_agent.task", "--runtime-api-address", address, "--token", token]


def run(address: str, secret_file: Path, parent_pid: int | None = None) -> int:
    """Start a task process for each ClientApp task until stopped (SIGTERM/SIGINT) or the parent exits."""
    stopped = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopped
        stopped = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    client = flower_runtime.executor_client(address, secret_file.read_bytes())
    running: list[subprocess.Popen[bytes]] = []
    try:
        while not stopped and (parent_pid is None or _alive(parent_pid)):
            running = [proc for proc in running if proc.poll() is None]
            try:
                token = flower_runtime.acquire_client_app_task(client)
            except (httpx.HTTPError, OSError) as exc:  # the SuperNode is starting or restarting (join watches it)
                log.debug("no answer from the SuperNode's Runtime API yet (%s)", type(exc).__name__)
                time.sleep(_RETRY_SECONDS)
                continue
            if token is not None:
                running.append(subprocess.Popen(task_command(address, token)))
                log.info("started the site agent for a new message (%d running)", len(running))
            time.sleep(_POLL_SECONDS)
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        client.close()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m site_agent.task_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    configure_logging()
    return run(args.runtime_api_address, args.secret_file, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
