"""`site-agent join` owns its processes: real `site-agent join` and `flower-supernode` processes on 127.0.0.1.

The SuperNode is pointed at a port where no SuperLink listens, so it keeps retrying; beside it runs the
site's task runner (``site_agent.task_runner``), in a group of its own, which a stop must not leave behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from site_agent import join
from tests.deployment.live import Processes, free_port, named_descendants, process_group


def _command(site: join.JoinSettings) -> list[str]:
    return ["site-agent", "join", "--site-id", site.site_id, "--key-dir", str(site.key_dir),
            "--superlink", f"127.0.0.1:{free_port()}", "--data", str(site.data), "--dataset", str(site.dataset),
            "--flwr-home", str(site.home()), "--cache-dir", str(site.cache()), "--port", str(free_port()),
            "--threads", "1"]


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _supernode_and_runner(join_pid: int) -> tuple[int, int] | None:
    """The SuperNode and the task runner join started, once both run; and never Flower's own executor."""
    assert not named_descendants(join_pid, "flower-superexec"), "a SuperExec would run the coordinator's code"
    nodes = named_descendants(join_pid, "flower-supernode")
    runners = named_descendants(join_pid, "site_agent.task_runner")
    return (nodes[0], runners[0]) if nodes and runners else None


@pytest.mark.live
@pytest.mark.flower
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_the_supernode_and_everything_it_started(
    site: join.JoinSettings, tmp_path: Path, processes: Processes, stop: signal.Signals
) -> None:
    agent = processes.start("join", _command(site), dict(os.environ))
    node, runner = _wait(lambda: _supernode_and_runner(agent.pid), 60, "the SuperNode and the runner start")
    assert os.getpgid(node) == node and os.getpgid(runner) == runner  # each leads a group of its own

    agent.send_signal(stop)
    assert agent.wait(timeout=30) == 0
    log = (tmp_path / "join.log").read_text()
    assert f"stopped by {stop.name}" in log and "every process it started have exited" in log
    assert process_group(node) == [], "a process of the SuperNode's group outlived join"
    assert process_group(runner) == [], "a process of the runner's group outlived join"


@pytest.mark.live
@pytest.mark.flower
def test_a_killed_supernode_is_noticed_cleaned_up_and_restarted(
    site: join.JoinSettings, tmp_path: Path, processes: Processes
) -> None:
    agent = processes.start("join", _command(site), dict(os.environ))
    node, runner = _wait(lambda: _supernode_and_runner(agent.pid), 60, "the SuperNode and the runner start")

    os.kill(node, signal.SIGKILL)
    log = tmp_path / "join.log"
    _wait(lambda: "SuperNode died (SIGKILL); restarting in 5 s" in log.read_text(), 15, "join reports the death")
    _wait(lambda: process_group(runner) == [], 15, "the dead SuperNode's runner is stopped")
    restarted = _wait(lambda: _supernode_and_runner(agent.pid), 60, "a new SuperNode and runner start")
    assert restarted[0] != node and agent.poll() is None

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert process_group(restarted[0]) == [] and process_group(restarted[1]) == []


@pytest.mark.live
@pytest.mark.flower
def test_a_killed_task_runner_takes_its_supernode_down_and_both_are_restarted(
    site: join.JoinSettings, tmp_path: Path, processes: Processes
) -> None:
    """Without its runner a SuperNode would accept messages nobody answers: join restarts the pair."""
    agent = processes.start("join", _command(site), dict(os.environ))
    node, runner = _wait(lambda: _supernode_and_runner(agent.pid), 60, "the SuperNode and the runner start")

    os.kill(runner, signal.SIGKILL)
    log = tmp_path / "join.log"
    _wait(lambda: "the site's task runner exited" in log.read_text(), 15, "join reports the runner's death")
    _wait(lambda: process_group(node) == [], 15, "its SuperNode is stopped")
    restarted = _wait(lambda: _supernode_and_runner(agent.pid), 60, "a new SuperNode and runner start")
    assert restarted[0] != node and restarted[1] != runner

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert process_group(restarted[0]) == [] and process_group(restarted[1]) == []
