"""The site's hash-chained audit log: intact logs verify, every kind of tampering is named; `site-agent audit`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.errors import AuditLogError
from site_agent import audit
from site_agent.audit import AuditEvent
from site_agent.cli import app
from tests.conftest import make_request


def _log(cache: Path, entries: int = 4) -> Path:
    """A log of ``entries`` entries; returns the JSONL file."""
    request = make_request()
    events = [AuditEvent.REQUEST_RECEIVED, AuditEvent.SET_BUILT, AuditEvent.PRIVACY_REPORT, AuditEvent.DECISION]
    for n in range(entries):
        audit.record(cache, events[n % len(events)], request, "site-agent", images=4, seconds=1.5 + n,
                     failed_limits=["max_mia_auc"], note=None)
    return cache / "audit" / "audit.jsonl"


def _edit(lines: list[str]) -> list[str]:
    entry = json.loads(lines[1])
    entry["details"]["images"] = 40
    return [lines[0], json.dumps(entry), *lines[2:]]


def _reorder(lines: list[str]) -> list[str]:
    return [lines[0], lines[2], lines[1], *lines[3:]]


def _drop_middle(lines: list[str]) -> list[str]:
    return [lines[0], *lines[2:]]


def _drop_last(lines: list[str]) -> list[str]:
    return lines[:-1]


def test_an_intact_log_verifies_and_chains_each_entry_to_the_one_before(tmp_path: Path) -> None:
    """Seq counts from 1, each prev is the previous hash, and the head holds the last."""
    _log(tmp_path)
    entries = audit.verify(tmp_path)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev == audit.GENESIS and all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    head = json.loads((tmp_path / "audit" / "head.json").read_text())
    assert head == {"seq": 4, "hash": entries[-1].hash}
    assert audit.verify(tmp_path / "elsewhere") == []  # no log yet: nothing to break


@pytest.mark.parametrize(("tamper", "named"), [
    (_edit, "line 2 (entry seq 2, set_built) was altered"),
    (_reorder, "line 2 (entry seq 3, privacy_report) should be seq 2"),
    (_drop_middle, "line 2 (entry seq 3, privacy_report) should be seq 2"),
    (_drop_last, "ends at entry seq 3, but its head records seq 4"),
])
def test_tampering_is_detected_and_names_the_first_bad_entry(
    tmp_path: Path, tamper: Callable[[list[str]], list[str]], named: str
) -> None:
    """An edited entry, a reordered pair, a removed middle entry and a removed last entry each break the chain."""
    path = _log(tmp_path)
    path.write_text("\n".join(tamper(path.read_text().splitlines())) + "\n")
    with pytest.raises(AuditLogError, match=named.replace("(", r"\(").replace(")", r"\)")):
        audit.verify(tmp_path)


def test_a_rehashed_edit_still_breaks_the_next_link(tmp_path: Path) -> None:
    """Recomputing an edited entry's own hash is not enough: the next entry's prev no longer matches."""
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    edited = audit.AuditEntry.model_validate_json(_edit(lines)[1])
    lines[1] = edited.model_copy(update={"hash": edited.computed_hash()}).model_dump_json()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match="line 3 .* does not follow the entry before it"):
        audit.verify(tmp_path)


def test_an_entry_appended_after_a_cut_still_shows_the_cut(tmp_path: Path) -> None:
    """Appends chain to the head file, so truncating and then logging on does not hide the truncation."""
    path = _log(tmp_path)
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    audit.record(tmp_path, AuditEvent.RELEASE, make_request(), "site-agent", bytes=10)
    with pytest.raises(AuditLogError, match="line 4 .* should be seq 4"):
        audit.verify(tmp_path)


def test_details_hold_plain_values_only(tmp_path: Path) -> None:
    """No arrays or nested structures: an entry cannot carry pixel data or per-image values."""
    with pytest.raises(ValueError):
        audit.record(tmp_path, AuditEvent.SET_BUILT, make_request(), "site-agent", images=[[0.1, 0.2]])
    with pytest.raises(ValueError):
        audit.record(tmp_path, AuditEvent.SET_BUILT, make_request(), "site-agent", values=[str(i) for i in range(100)])


def test_audit_show_and_verify_commands(tmp_path: Path) -> None:
    """`audit show` prints one line per entry; `audit verify` exits 0 on an intact log and 1 naming the bad entry."""
    runner = CliRunner()
    path = _log(tmp_path, 3)
    shown = runner.invoke(app, ["audit", "show", "--cache-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.strip().splitlines()
    assert len(lines) == 3 and "request_received" in lines[0] and "images=4" in lines[1]
    verified = runner.invoke(app, ["audit", "verify", "--cache-dir", str(tmp_path)])
    assert verified.exit_code == 0 and "3 entries" in verified.output
    path.write_text("\n".join(_edit(path.read_text().splitlines())) + "\n")
    broken = runner.invoke(app, ["audit", "verify", "--cache-dir", str(tmp_path)])
    assert broken.exit_code == 1 and isinstance(broken.exception, AuditLogError)
    assert "line 2" in str(broken.exception)


def _rewrite_recomputing_the_chain(cache: Path) -> None:
    """The best move of someone who can write the folder: edit an entry, then recompute every hash and the head."""
    path = cache / "audit" / "audit.jsonl"
    prev, lines = audit.GENESIS, []
    for line in _edit(path.read_text().splitlines()):
        entry = audit.AuditEntry.model_validate_json(line).model_copy(update={"prev": prev})
        entry = entry.model_copy(update={"hash": entry.computed_hash()})
        lines.append(entry.model_dump_json())
        prev = entry.hash
    path.write_text("\n".join(lines) + "\n")
    (cache / "audit" / "head.json").write_text(json.dumps({"seq": len(lines), "hash": prev}))


def test_a_recomputed_chain_passes_verify_but_not_an_anchor_kept_elsewhere(tmp_path: Path) -> None:
    """What `audit verify` promises, and no more: an unkeyed chain recomputed after an edit verifies; the head hash
    it printed earlier, kept outside the folder, shows the rewrite."""
    runner = CliRunner()
    _log(tmp_path, 3)
    before = runner.invoke(app, ["audit", "verify", "--cache-dir", str(tmp_path)])
    head = audit.verify(tmp_path)[-1].hash
    assert before.exit_code == 0 and f"head: seq 3, hash {head}" in before.output
    anchored = runner.invoke(app, ["audit", "verify", "--cache-dir", str(tmp_path), "--anchor", head])
    assert anchored.exit_code == 0 and "holds the anchored entry" in anchored.output
    _rewrite_recomputing_the_chain(tmp_path)
    assert len(audit.verify(tmp_path)) == 3  # the chain alone cannot tell
    with pytest.raises(AuditLogError, match="no entry of the audit log has the hash"):
        audit.verify(tmp_path, anchor=head)
    audit.record(tmp_path, AuditEvent.RELEASE, make_request(), "site-agent", bytes=10)
    assert len(audit.verify(tmp_path, anchor=audit.verify(tmp_path)[1].hash)) == 4  # an earlier anchor still holds
