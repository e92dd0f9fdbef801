"""The site's own record, read from its audit log: per request, what was released, when, to which run, and
how the global model of that run scored on this site's test images.

One row per request (a run's round has its own nonce). The latest decision on it says whether it left:
``released`` (a sealed bundle was handed to Flower), ``blocked`` by the policy, ``held`` for review, or
``rejected`` by the site's reviewer. A run's evaluation belongs to the last request of that run before it.
A dpdm request also shows the epsilon it was charged and the coordinator's DP ledger after it (``epsilon_spent``,
composed by the PLD accountant at ``ledger_delta``; ``site_agent.budget``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from site_agent.audit import AuditEntry, AuditEvent


@dataclass
class RequestRecord:
    run_id: str
    nonce: str
    asked_at: str
    round: int | None = None
    method: str | None = None
    ipc: int | None = None
    images: int | None = None  # synthetic images built
    outcome: str = "asked"  # asked (nothing decided yet), blocked, held, approved, rejected, released
    why: str | None = None
    released_at: str | None = None
    bundle_sha256: str | None = None
    bundle_bytes: int | None = None
    evaluated_at: str | None = None
    test_images: int | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    auc: float | None = None
    epsilon: float | None = None  # charged to the DP ledger for this request (dpdm)
    epsilon_spent: float | None = None  # the ledger's composed epsilon towards this coordinator after it
    ledger_delta: float | None = None
    ledger_releases: int | None = None

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def site_history(entries: list[AuditEntry]) -> list[RequestRecord]:
    """The records of every request in the log, oldest first."""
    records: dict[str, RequestRecord] = {}
    last_of_run: dict[str, RequestRecord] = {}
    for entry in entries:
        details = entry.details
        if entry.event == AuditEvent.EVALUATED:
            record = last_of_run.get(entry.run_id)
            if record is None:  # scored without a request in this log (e.g. a log started afresh)
                record = last_of_run[entry.run_id] = RequestRecord(entry.run_id, "", entry.time)
                records[f"evaluated-{entry.seq}"] = record
            record.evaluated_at, record.test_images = entry.time, _int(details.get("test_images"))
            record.accuracy, record.balanced_accuracy, record.auc = (
                _float(details.get(key)) for key in ("accuracy", "balanced_accuracy", "auc"))
            continue
        if entry.event == AuditEvent.BUDGET_REFUSED:  # a distill request's shows as its decision; others are no request
            continue
        record = records.get(entry.nonce)
        if record is None:
            record = records[entry.nonce] = RequestRecord(entry.run_id, entry.nonce, entry.time)
            last_of_run[entry.run_id] = record
        if entry.event == AuditEvent.REQUEST_RECEIVED:
            record.round, record.method, record.ipc = (_int(details.get("round")), _str(details.get("method")),
                                                       _int(details.get("ipc")))
        elif entry.event == AuditEvent.SET_BUILT:
            record.images = _int(details.get("images"))
        elif entry.event == AuditEvent.DECISION:
            record.outcome, record.why = str(details.get("decision", "decided")), _str(details.get("why"))
        elif entry.event == AuditEvent.DP_SPENT:
            record.epsilon, record.epsilon_spent = _float(details.get("epsilon")), _float(details.get("epsilon_spent"))
            record.ledger_delta, record.ledger_releases = _float(details.get("lifetime_delta")), _int(details.get("releases"))
        elif entry.event == AuditEvent.RELEASE:
            record.outcome, record.released_at = "released", entry.time
            record.bundle_sha256, record.bundle_bytes = _str(details.get("sha256")), _int(details.get("bytes"))
    return list(records.values())


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
