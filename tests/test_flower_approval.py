"""Release control end to end on Flower's Simulation Engine: sites hold their releases until a person decides.

Two simulated sites with ``require-approval`` distill and hold; the coordinator records them as
awaiting approval and asks again (``approval-wait-s``) with the same request. Meanwhile the test plays
both sites' reviewers through the functions ``site-agent approve`` and ``reject`` call: the approved
site then sends exactly its stored bundle, the rejected one says so, and neither distills again.
"""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from harness.simulate import simulate
from shared.config import RunConfig
from shared.wire import FieldKey, RecordKey, release_state_of
from site_agent import audit
from site_agent.approval import BUNDLE_NAME, FolderApproval, ReleaseStatus
from tests.harness.test_simulate_own_data import TINY, _export

pytestmark = pytest.mark.flower


def _recorder(record_dir: Path):
    """A mod that keeps every distill reply each site sends: its release state and reason, or the bundle's bytes."""

    def record(msg, context, call_next):
        entry = {"partition": int(context.node_config["partition-id"]), "state": None, "sealed": None}
        try:
            reply = call_next(msg, context)
            state = release_state_of(reply)  # a held or rejected release is a typed reply, not an error
            entry["state"] = (state[0].value, state[1]) if state else None
            bundle = reply.content.config_records.get(RecordKey.BUNDLE) if reply.has_content() else None
            entry["sealed"] = bundle[FieldKey.SEALED] if bundle is not None else None
            return reply
        finally:
            if msg.metadata.message_type == "query.distill":
                (record_dir / f"{time.time_ns()}.pkl").write_bytes(pickle.dumps(entry))

    return record


def _review(caches: dict[str, Path], stored: dict[str, bytes], problems: list[Exception]) -> None:
    """The sites' reviewers: once both releases are held, approve site-0's and reject site-1's."""
    try:
        approvals = {site: FolderApproval(cache / "approvals", cache) for site, cache in caches.items()}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            held = {site: a.releases() for site, a in approvals.items()}
            if all(len(h) == 1 and h[0].status == ReleaseStatus.HELD for h in held.values()):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the sites never held their releases")
        site0, site1 = held["site-0"][0], held["site-1"][0]
        stored["site-0"] = (site0.folder / BUNDLE_NAME).read_bytes()
        approvals["site-0"].approve(site0.id, "alice")
        approvals["site-1"].reject(site1.id, "too close to a patient", "bob")
    except Exception as exc:  # noqa: BLE001 (surfaced by the test after the run)
        problems.append(exc)


def test_approved_release_is_pooled_as_stored_and_a_rejected_one_is_recorded(tmp_path: Path) -> None:
    """First ask: both sites hold (nothing sealed leaves); after review, the approved bytes are pooled, once distilled."""
    out = tmp_path / "out"
    config = RunConfig(data_root=str(_export(tmp_path / "export.npz")), out_dir=str(out),
                       **{**TINY, "min_sites": 1}, require_approval=True, approval_wait_s=240.0,
                       approval_ask_every_s=2.0)
    caches = {site: out.resolve() / ".site-cache" / site for site in ("site-0", "site-1")}
    stored: dict[str, bytes] = {}
    problems: list[Exception] = []
    reviewer = threading.Thread(target=_review, args=(caches, stored, problems), daemon=True)
    reviewer.start()
    record_dir = tmp_path / "replies"
    record_dir.mkdir()
    run_dir, summary = simulate(config, client_mods=[_recorder(record_dir)], yardstick=False)
    reviewer.join(timeout=10)
    assert not problems, problems

    # The coordinator: one site accepted, the other recorded as rejected by its reviewer, not as a failure.
    assert summary.status == "completed" and summary.sites_accepted == 1
    assert sorted(s.status for s in summary.sites) == ["accepted", "rejected-at-site"]
    declined = next(s for s in summary.sites if s.status == "rejected-at-site")
    assert "rejected by this site's reviewer: too close to a patient" in declined.reason
    assert "rejected-at-site" in (run_dir / "report.md").read_text()
    (received,) = (run_dir / "bundles").glob("*.sealed")
    assert received.read_bytes() == stored["site-0"]  # exactly the reviewed bytes

    # What left each site: first only refusals (no sealed bytes), then site-0's stored bundle, never site-1's.
    replies = [pickle.loads(p.read_bytes()) for p in sorted(record_dir.glob("*.pkl"))]
    for partition in (0, 1):
        mine = [r for r in replies if r["partition"] == partition]
        assert mine[0]["state"][0] == "awaiting-approval" and mine[0]["sealed"] is None
        assert "awaits this site's manual approval" in mine[0]["state"][1]
        assert len(mine) >= 2
    assert [r["sealed"] for r in replies if r["sealed"] is not None] == [stored["site-0"]]

    # Each site distilled once, and its audit log is intact.
    for site, cache in caches.items():
        entries = audit.verify(cache)
        assert sum(e.event == "set_built" for e in entries) == 1, site
        assert sum(e.event == "release" for e in entries) == (1 if site == "site-0" else 0)
