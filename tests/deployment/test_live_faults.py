"""Faults a deployment meets in its first week, survived on a real SuperLink (TLS, node auth) on 127.0.0.1.

* a site's SuperNode killed while it handles its distillation request: the round completes without
  it, and names it;
* a site revoked between two runs, while its node stays connected: refused in the next run, saying so;
* the SuperLink stopped and restarted on its database while the sites wait: `site-agent join`
  reconnects them and the next run completes;
* the coordinator (SuperLink and ServerApp) killed after two of three sites delivered: restarted on
  the same database, `coordinator run --resume` completes asking only the third, with a new nonce.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from coordinator.summary import RunSummary, SiteEntry, read_summary
from site_agent.policy import PrivacyLimits, SitePolicy
from tests.deployment.live import PROJECT, TINY, LiveFederation, Processes

pytestmark = [pytest.mark.live, pytest.mark.flower, pytest.mark.realdata]
# The faults are the subject here, not what a release reveals: the sites skip the privacy report.
QUICK = SitePolicy(privacy=PrivacyLimits(report=False))
TINY_SETTINGS = {key: value for key, value in TINY.items() if key not in ("sites", "min-sites")}


def _linked(root: Path, processes: Processes, data_root: Path, names: list[str]) -> LiveFederation:
    """A federation whose SuperLink is up with every site's node registered; no SuperNode started yet."""
    fed = LiveFederation.create(root, processes, data_root, names, policy=QUICK)
    fed.start_superlink()
    fed.register_nodes(names)
    return fed


def _summary(fed: LiveFederation, run_id: int) -> RunSummary:
    return read_summary(fed.out_dir / f"run-{run_id}")


def _by_site(summary: RunSummary) -> dict[str, SiteEntry]:
    return {site.site_id: site for site in summary.sites}


def test_a_site_killed_mid_distillation_is_named_and_the_round_completes_without_it(
    data_root: Path, tmp_path: Path, processes: Processes
) -> None:
    names = ["site-a", "site-b", "site-c", "site-d"]
    fed = _linked(tmp_path, processes, data_root, names)
    for index, name in enumerate(names):
        fed.start_supernode(name, index, 4)

    run_id = fed.submit(**{"sites": 4, "min-sites": 3, "distill-timeout": 120.0, "evaluate-timeout": 60.0})
    deadline = time.monotonic() + 120
    while not fed.answering("site-d") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fed.answering("site-d"), "site-d never started handling its request"
    fed.signal_site("site-d", signal.SIGKILL)  # the SuperNode, its runner and the task process, mid-request

    # While the run waits for it, the operator sees every site's SuperNode and site-d not delivered.
    shown = fed.coordinator("status", "--run-id", str(run_id), "--key-dir", str(fed.coord), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert {s["site"] for s in status["sites"]} == set(names)
    assert all(s["superlink"] in ("online", "offline") for s in status["sites"])
    progress = {s["site"]: s["status"] for s in status["runs"][0]["sites"]}
    assert progress.get("site-d") == "distilling", status

    assert fed.wait(run_id) == "finished:completed", fed.logs()
    summary = _summary(fed, run_id)
    sites = _by_site(summary)
    assert summary.sites_accepted == 3 and {s for s in sites if sites[s].status == "accepted"} == set(names[:3])
    assert sites["site-d"].status == "missing"
    assert "no reply within" in sites["site-d"].reason or "dropped out" in sites["site-d"].reason
    run_dir = fed.out_dir / f"run-{run_id}"
    assert sorted(p.name for p in (run_dir / "bundles").iterdir()) == [f"{n}.sealed" for n in names[:3]]
    report = (run_dir / "report.md").read_text()
    assert "site-d" in report and "missing" in report


def test_a_revoked_site_is_refused_after_a_superlink_restart_that_join_survives(
    data_root: Path, tmp_path: Path, processes: Processes
) -> None:
    names = ["site-a", "site-b", "site-c"]
    fed = _linked(tmp_path, processes, data_root, names)
    for index, name in enumerate(names):
        fed.start_join(name, index, 3)

    first = fed.submit()
    assert fed.wait(first) == "finished:completed", fed.logs()
    assert _summary(fed, first).sites_accepted == 3

    # The operator revokes site-c in the trust store; its SuperNode stays registered and connected.
    revoked = subprocess.run(["coordinator", "sites", "revoke", "--key-dir", str(fed.coord), "--site-id", "site-c"],
                             capture_output=True, text=True, check=False, cwd=tmp_path)
    assert revoked.returncode == 0 and "revoked site-c" in revoked.stdout, revoked.stderr

    # The link drops: the SuperLink (and its ServerApp machinery) is killed and restarted on its database.
    fed.stop_superlink()
    time.sleep(3)
    fed.start_superlink()
    second = fed.submit()
    assert fed.wait(second) == "finished:completed", fed.logs()
    sites = _by_site(_summary(fed, second))
    assert sites["site-a"].status == sites["site-b"].status == "accepted"
    assert sites["site-c"].status == "rejected" and "revoked at" in sites["site-c"].reason
    assert not (fed.out_dir / f"run-{second}" / "bundles" / "site-c.sealed").exists()
    for name in names:
        assert fed.supernodes[name].poll() is None, f"join of {name} exited"


def test_a_coordinator_stopped_mid_round_resumes_asking_only_the_site_that_had_not_delivered(
    data_root: Path, tmp_path: Path, processes: Processes
) -> None:
    names = ["site-a", "site-b", "site-c"]
    fed = _linked(tmp_path, processes, data_root, names)
    for index, name in enumerate(names):
        fed.start_supernode(name, index, 3, max_retries=None)  # Flower reconnects them by itself
    settings = {"sites": 3, "min-sites": 3, "distill-timeout": 600.0}
    run_id = fed.submit(**settings)
    run_dir = fed.out_dir / f"run-{run_id}"

    # site-c freezes while it handles its request; the other two deliver; then the coordinator dies.
    deadline = time.monotonic() + 120
    while not fed.answering("site-c") and time.monotonic() < deadline:
        time.sleep(0.1)
    fed.signal_site("site-c", signal.SIGSTOP)
    deadline = time.monotonic() + 240
    while not all((run_dir / "bundles" / f"{n}.sealed").is_file() for n in names[:2]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all((run_dir / "bundles" / f"{n}.sealed").is_file() for n in names[:2]), fed.logs()
    first_nonce = json.loads((run_dir / "state.json").read_text())["requests"]["site-c"]["nonce"]
    fed.stop_superlink()
    fed.signal_site("site-c", signal.SIGKILL)  # the frozen site is restarted afresh
    fed.supernodes["site-c"].wait(timeout=30)
    del fed.runners["site-c"]

    fed.start_superlink()
    # Restarted under `site-agent join`: until the SuperLink lets go of the node's old session it refuses to
    # activate it (Flower code 305), and join starts it again until it is in.
    fed.start_join("site-c", 2, 3)
    joined = tmp_path / "join-site-c.log"
    deadline = time.monotonic() + 180
    accepted = b"SuperNode is in: the SuperLink accepted it as node"
    while accepted not in (joined.read_bytes() if joined.exists() else b"") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert accepted in joined.read_bytes(), joined.read_text(errors="replace")[-2000:]
    tiny = [f"--set={key}={value}" for key, value in {**TINY_SETTINGS, **settings}.items()]
    resumed = fed.coordinator("run", "--key-dir", str(fed.coord), "--out-dir", str(fed.out_dir), "--app-dir",
                              str(PROJECT), "--resume", f"run-{run_id}", *tiny)
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-2000:], fed.logs())
    summary = _summary(fed, run_id)
    assert summary.status == "completed" and summary.sites_accepted == 3
    state = json.loads((run_dir / "state.json").read_text())
    assert state["requests"]["site-c"]["nonce"] != first_nonce  # a fresh request; the old one answers nothing now
    for name in names[:2]:  # asked once, in the first attempt only
        assert (tmp_path / f"{name}.log").read_text().count(f"site {name}: distilling") == 1, name
    assert "site site-c: distilling" in joined.read_text()  # asked again, after the restart
