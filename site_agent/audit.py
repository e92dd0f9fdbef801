"""The site's audit log: what was asked, built, measured, decided and released, append-only and hash-chained.

::

    <cache-dir>/audit/audit.jsonl   one entry per line (AuditEntry as JSON), oldest first
    <cache-dir>/audit/head.json     the last entry's seq and hash, replaced atomically after each append
    <cache-dir>/audit/.lock         taken (fcntl) for each append, so two processes never interleave

Each entry's ``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the entry
without ``hash``; ``prev`` is the previous entry's hash (64 zeros for the first). :func:`verify`
recomputes the chain, so an edited entry, a reordered pair or a removed one breaks it; the head file
also catches entries cut off the end.

What that promises, exactly: the chain is unkeyed, so it shows edits made by someone who did not
recompute it (a hand edit, a tool that rewrote one line, a cut). Anyone who can write this folder can
edit an entry and recompute every hash after it and the head, and :func:`verify` then passes. Only a
hash kept outside the folder closes that: ``audit verify`` prints the head's, and ``audit verify
--anchor HASH`` later checks the log still holds that entry, i.e. nothing up to it was rewritten since.

Entries hold plain values only (counts, names, digests, times), never pixels or per-image values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import AuditLogError
from shared.fields import Hex64, first_problem
from shared.untrusted import untrusted_text
from site_agent.cache import locked, write_atomically

log = logging.getLogger(__name__)

AUDIT_DIR = "audit"
LOG_NAME = "audit.jsonl"
HEAD_NAME = "head.json"
GENESIS = "0" * 64

_Text = Annotated[str, Field(max_length=1000)]
_Plain = _Text | bool | int | float | None
Details = dict[Annotated[str, Field(max_length=64)], _Plain | Annotated[list[_Text], Field(max_length=32)]]


class AuditEvent(StrEnum):
    """What an entry records."""

    REQUEST_RECEIVED = "request_received"  # a coordinator asked for a set
    SET_BUILT = "set_built"  # a synthetic set was distilled
    PRIVACY_REPORT = "privacy_report"  # its privacy report: headline numbers, limits passed and failed
    DECISION = "decision"  # approved, rejected, or blocked by the policy
    RELEASE = "release"  # a sealed bundle was handed to Flower to send
    EVALUATED = "evaluated"  # the run's global model was scored on the site's test images (figures stay here)
    TUNING_COUNTS = "tuning_counts"  # confusion counts on the site's training images left for correction tuning
    APP_REFUSED = "app_refused"  # a run's app package was not pinned by this site: nothing of it ran
    BUDGET_REFUSED = "budget_refused"  # a request past one of the policy's budgets (site_agent.budget): refused by name
    POOL_REFUSED = "pool_refused"  # a scoring request's pooled sets were not all genuine sets this site trusts
    DP_SPENT = "dp_spent"  # a dpdm release charged to the coordinator's DP ledger: its epsilon and the composed total


class AuditEntry(BaseModel):
    """One line of the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    time: str  # UTC, ISO 8601
    event: AuditEvent
    actor: _Text  # "coordinator", "site-agent", "policy", or the reviewer's name
    run_id: _Text
    nonce: _Text
    details: Annotated[Details, Field(max_length=32)] = {}
    prev: Hex64
    hash: Hex64

    def computed_hash(self) -> str:
        """SHA-256 of the canonical JSON of this entry without ``hash``."""
        return _digest(self.model_dump(mode="json", exclude={"hash"}))


class AuditHead(BaseModel):
    """The last entry appended: makes entries cut off the end of the log visible."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    hash: Hex64


class Asked(Protocol):
    """What an entry is about: a request (``DistillRequest``) or a release's manifest."""

    run_id: str
    nonce: str


def audit_dir(cache_dir: Path) -> Path:
    return cache_dir / AUDIT_DIR


def record(cache_dir: Path, event: AuditEvent | str, about: Asked, actor: str, **details: object) -> AuditEntry:
    """Append one entry to the site's audit log (under a file lock) and return it.

    Raises:
        ValidationError: a detail is not a plain value (a bug in the caller, not the site's data).
    """
    folder = audit_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(folder):
        head = _append_after(folder)
        fields = {"seq": head.seq + 1, "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                  "event": AuditEvent(event), "actor": actor, "run_id": about.run_id, "nonce": about.nonce,
                  "details": details, "prev": head.hash}
        unsigned = AuditEntry.model_validate({**fields, "hash": GENESIS})
        entry = unsigned.model_copy(update={"hash": unsigned.computed_hash()})
        with (folder / LOG_NAME).open("a", encoding="utf-8") as file:
            file.write(entry.model_dump_json() + "\n")
            file.flush()
        new_head = AuditHead(seq=entry.seq, hash=entry.hash).model_dump_json()
        write_atomically(folder / HEAD_NAME, lambda p: p.write_text(new_head + "\n"))
    log.debug("audit %d: %s by %s", entry.seq, entry.event.value, untrusted_text(actor))
    return entry


def read_entries(cache_dir: Path) -> list[AuditEntry]:
    """Every entry of the log as written, parsed but not checked against the chain.

    Raises:
        AuditLogError: a line is not an entry (naming its line number).
    """
    path = audit_dir(cache_dir) / LOG_NAME
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entries.append(AuditEntry.model_validate_json(line))
        except ValidationError as exc:
            raise AuditLogError(f"audit log line {number} is not an entry: {first_problem(exc)}") from None
    return entries


def verify(cache_dir: Path, anchor: str | None = None) -> list[AuditEntry]:
    """The entries of an intact log, oldest first.

    ``anchor`` is an entry's hash noted outside this folder earlier (``site-agent audit verify`` prints the
    head's): the log must still hold that entry, so the log up to it was not rewritten since.

    Raises:
        AuditLogError: naming the first entry (line) whose seq, prev or hash breaks the chain, a log
            shorter than its head file records, or no entry with the anchor's hash.
    """
    entries = read_entries(cache_dir)
    prev = GENESIS
    for number, entry in enumerate(entries, start=1):
        where = f"audit log line {number} (entry seq {entry.seq}, {entry.event.value})"
        if entry.hash != entry.computed_hash():
            raise AuditLogError(f"{where} was altered: its hash does not match its contents")
        if entry.seq != number:
            raise AuditLogError(f"{where} should be seq {number}: entries were removed or reordered")
        if entry.prev != prev:
            raise AuditLogError(f"{where} does not follow the entry before it: entries were removed or reordered")
        prev = entry.hash
    head = _read_head(audit_dir(cache_dir))
    last = AuditHead(seq=len(entries), hash=prev)
    if head is None and entries:
        raise AuditLogError(f"the audit log's head file is missing (the log holds {len(entries)} entries)")
    if head is not None and head != last:
        raise AuditLogError(f"audit log ends at entry seq {last.seq}, but its head records seq {head.seq}: "
                            "entries were removed from the end, or the log was replaced")
    if anchor is not None and all(entry.hash != anchor.strip().lower() for entry in entries):
        raise AuditLogError(f"no entry of the audit log has the hash {untrusted_text(anchor, 64)!r} noted for it: "
                            "the log was rewritten up to that entry (chain recomputed), replaced, or is another's")
    return entries


def describe(entry: AuditEntry) -> str:
    """One readable line: seq, time, event, actor, run, nonce prefix and the details.

    Every text in it is shown through :func:`untrusted_text`: the run id, nonce and some details come from
    the coordinator, and an entry written before run ids had a pattern (or by hand) may hold anything, so
    no entry can print a second line or send the terminal an escape code.
    """
    details = " ".join(f"{untrusted_text(key, 64)}={_show(value)}" for key, value in entry.details.items())
    return (f"{entry.seq:>5} {untrusted_text(entry.time, 40)} {entry.event.value:<16} "
            f"by {untrusted_text(entry.actor, 200):<12} run {untrusted_text(entry.run_id, 128)} "
            f"nonce {untrusted_text(entry.nonce[:12])} {details}").rstrip()


def _append_after(folder: Path) -> AuditHead:
    """The entry a new one chains to: the head file's, so a log cut short and appended to still shows the cut."""
    head = _read_head(folder)
    if head is not None:
        return head
    path = folder / LOG_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not lines:
        return AuditHead(seq=0, hash=GENESIS)
    log.warning("audit head file missing; chaining to the log's last line (`site-agent audit verify` reports it)")
    try:
        last = AuditEntry.model_validate_json(lines[-1])
    except ValidationError:
        return AuditHead(seq=len(lines), hash=GENESIS)
    return AuditHead(seq=last.seq, hash=last.hash)


def _read_head(folder: Path) -> AuditHead | None:
    path = folder / HEAD_NAME
    if not path.exists():
        return None
    try:
        return AuditHead.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise AuditLogError(f"the audit log's head file is malformed: {first_problem(exc)}") from None



def _digest(fields: dict[str, object]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(untrusted_text(item, 100) for item in value) or "-"
    return untrusted_text(value)
