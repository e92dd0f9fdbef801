"""What one coordinator may have of this site, over a rolling window and over the site's lifetime.

Every ``evaluate`` and ``tune`` answer scores a model the coordinator chose on the site's own images (an
oracle on them), and every release is a look at the training images. The coordinator names its runs, so
nothing kept per run id bounds them: the site counts per *coordinator key*, the fingerprint of the pinned
coordinator public key it seals to (``site_agent.identity``), whatever run ids that coordinator uses.

Per coordinator the site keeps, in its private cache::

    <cache-dir>/budget/<fingerprint>.json   a Ledger: answers and release attempts in the window and ever,
                                            evaluations per run id, the (run, round)s taken on, the DP ledger
    <cache-dir>/budget/.lock                taken (fcntl) around each read-check-write, so two task
                                            processes never both spend the last unit

The policy's ``budget`` limits are checked and the spend written before any work (``spend_answer``,
``take_release``); past a limit the site refuses by the limit's name and records ``budget_refused`` in its
audit log. Spent units are never given back: a release attempt counts whether it is released, blocked by
the privacy limits or stopped.

At most one release per (run, round): the round is taken with the attempt and freed only when the
attempt ended with nothing sealed (:func:`free_round`), so a blocked set can be tried again as a new
attempt, never sent twice. An approved bundle sent again is answered from the approvals folder before
any of this (``site_agent.approval``).

The DP ledger: every ``dpdm`` request taken on is charged its Gaussian mechanism (the noise multiplier its
epsilon and delta calibrate to) before the data is read, and never refunded. The epsilon spent on a
coordinator is the PLD composition of all of them at the policy's ``lifetime_delta``
(``site_agent.distill.accounting.composed_epsilon``); a request that would take it over ``max_epsilon``
is refused before any work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from shared import crypto
from shared.errors import PolicyError
from shared.fields import Hex64
from shared.methods import DPDMConfig
from shared.schemas import DistillRequest
from site_agent import audit
from site_agent.audit import AuditEvent
from site_agent.cache import locked, write_atomically
from site_agent.distill.accounting import GaussianRelease, composed_epsilon, noise_multiplier_for
from site_agent.identity import load_site_identity
from site_agent.policy import SitePolicy

BUDGET_DIR = "budget"


class Spend(StrEnum):
    """What the site counts."""

    EVALUATION = "evaluation"  # an evaluate answer: counts on the test images
    TUNING = "tuning"  # a tune answer: counts on the training images
    RELEASE = "release"  # a distill request taken on (an attempt, whatever became of it)


_LIMITS = {  # what the policy's budget calls each: (per window, lifetime)
    Spend.EVALUATION: ("max_evaluations_per_window", "max_evaluations_lifetime"),
    Spend.TUNING: ("max_tunings_per_window", "max_tunings_lifetime"),
    Spend.RELEASE: ("max_release_attempts_per_window", "max_release_attempts_lifetime"),
}
_NOUNS = {Spend.EVALUATION: "evaluations", Spend.TUNING: "tuning answers", Spend.RELEASE: "release attempts"}


class _Refusal(NamedTuple):
    limit: str  # the policy field's name
    allowed: float
    message: str  # safe to send: names the limit and counts, never a value measured on the data


class DPCharge(BaseModel):
    """One dpdm release charged to the ledger: what the accountant composes, and what it was asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str  # UTC, ISO 8601
    run: str  # sha256 of the run id, cut to 32 hex digits (the run id comes from the coordinator)
    round: int
    epsilon: float  # the request's target, for this release alone
    delta: float
    noise_multiplier: float
    steps: int = 1
    sampling_rate: float = 1.0

    def release(self) -> GaussianRelease:
        return GaussianRelease(self.noise_multiplier, self.steps, self.sampling_rate)


class Ledger(BaseModel):
    """Everything one coordinator has had of this site."""

    model_config = ConfigDict(extra="forbid")

    coordinator: Hex64  # fingerprint of the coordinator's public key
    lifetime: dict[Spend, int] = {}
    recent: dict[Spend, list[float]] = {}  # unix times of the spends within the window, oldest first
    per_run: dict[str, int] = {}  # hashed run id -> evaluate and tune answers (max_evaluations_per_run)
    rounds: list[str] = []  # "<hashed run id>/<round>" of every release attempt not freed
    dp: list[DPCharge] = []

    def epsilon_spent(self, delta: float, extra: DPCharge | None = None) -> float:
        """The epsilon at ``delta`` of every dpdm release charged (and ``extra``), composed by the PLD accountant."""
        return composed_epsilon([c.release() for c in [*self.dp, *([extra] if extra else [])]], delta)


def coordinator_id(site_id: str, key_dir: Path) -> str:
    """The fingerprint of the coordinator key this site has pinned: whom the budgets are kept for.

    Raises:
        KeyFileError: the site's keys are missing or unsafe (named by kind, never by path).
    """
    return crypto.fingerprint(load_site_identity(site_id, key_dir).coordinator_key)


def spend_answer(cache_dir: Path, coordinator: str, kind: Spend, run_id: str, policy: SitePolicy) -> Ledger:
    """Count one evaluate or tune answer for ``coordinator``, before it is computed; returns the ledger after.

    Raises:
        PolicyError: a budget limit, or ``max_evaluations_per_run`` for this run id, is spent (named); nothing
            is counted, and the refusal is in the audit log.
    """
    run = _hashed(run_id)
    with locked(cache_dir / BUDGET_DIR):
        ledger, now = load_ledger(cache_dir, coordinator), time.time()
        refusal = _over(ledger, kind, policy, now)
        if refusal is None and ledger.per_run.get(run, 0) >= policy.max_evaluations_per_run:
            limit = policy.max_evaluations_per_run
            refusal = _Refusal("max_evaluations_per_run", limit,
                               f"this run has had the {limit} evaluations this site's policy allows per run "
                               "(max_evaluations_per_run)")
        if refusal is None:
            _count(ledger, kind, policy, now)
            ledger.per_run[run] = ledger.per_run.get(run, 0) + 1
            _save(cache_dir, ledger)
    if refusal is not None:
        _refuse(cache_dir, coordinator, kind, run_id, "", refusal)
    return ledger


def take_release(cache_dir: Path, coordinator: str, request: DistillRequest, policy: SitePolicy) -> Ledger:
    """Take on one release attempt for ``coordinator``, before any work: count it, take its (run, round), and
    charge a dpdm request's mechanism to the DP ledger. Returns the ledger after.

    Raises:
        PolicyError: a release budget is spent, the (run, round) was taken on before, or a dpdm release would
            take the composed epsilon over ``max_epsilon`` (each named); nothing is counted or charged, and the
            refusal is in the audit log.
    """
    round_key = f"{_hashed(request.run_id)}/{request.round}"
    config = request.distill
    charge = _charge(request, config) if isinstance(config, DPDMConfig) else None
    spent = None
    with locked(cache_dir / BUDGET_DIR):
        ledger, now = load_ledger(cache_dir, coordinator), time.time()
        refusal = _over(ledger, Spend.RELEASE, policy, now)
        if refusal is None and round_key in ledger.rounds:
            refusal = _Refusal("one_release_per_round", 1,
                               f"this site already took on a release for round {request.round} of run "
                               f"{request.run_id!r} (one per run and round); nothing was distilled")
        if refusal is None and charge is not None:
            spent = ledger.epsilon_spent(policy.lifetime_delta, charge)
            if policy.max_epsilon is not None and spent > policy.max_epsilon:
                before = ledger.epsilon_spent(policy.lifetime_delta)
                refusal = _Refusal(
                    "max_epsilon", policy.max_epsilon,
                    f"a release at epsilon {charge.epsilon:g} would take the epsilon this site has spent on this "
                    f"coordinator from {before:.3g} to {spent:.3g} (delta {policy.lifetime_delta:g}, "
                    f"{len(ledger.dp) + 1} releases composed), over its lifetime budget of {policy.max_epsilon:g} "
                    "(max_epsilon); nothing was distilled")
        if refusal is None:
            _count(ledger, Spend.RELEASE, policy, now)
            ledger.rounds.append(round_key)
            if charge is not None:
                ledger.dp.append(charge)
            _save(cache_dir, ledger)
    if refusal is not None:
        _refuse(cache_dir, coordinator, Spend.RELEASE, request.run_id, request.nonce, refusal)
    if charge is not None:
        audit.record(cache_dir, AuditEvent.DP_SPENT, request, "site-agent", coordinator=coordinator[:16],
                     epsilon=charge.epsilon, delta=charge.delta, noise_multiplier=round(charge.noise_multiplier, 6),
                     epsilon_spent=round(spent or 0.0, 6), lifetime_delta=policy.lifetime_delta,
                     releases=len(ledger.dp), max_epsilon=policy.max_epsilon)
    return ledger


def free_round(cache_dir: Path, coordinator: str, request: DistillRequest) -> None:
    """Give back the (run, round) of an attempt that ended with nothing sealed; its counts and epsilon stay spent."""
    round_key = f"{_hashed(request.run_id)}/{request.round}"
    with locked(cache_dir / BUDGET_DIR):
        ledger = load_ledger(cache_dir, coordinator)
        if round_key in ledger.rounds:
            ledger.rounds.remove(round_key)
            _save(cache_dir, ledger)


def load_ledger(cache_dir: Path, coordinator: str) -> Ledger:
    """The ledger kept for ``coordinator`` (an empty one when it has had nothing yet)."""
    path = _ledger_path(cache_dir, coordinator)
    return Ledger.model_validate_json(path.read_text()) if path.is_file() else Ledger(coordinator=coordinator)


def ledgers(cache_dir: Path) -> list[Ledger]:
    """Every coordinator's ledger in this cache."""
    folder = cache_dir / BUDGET_DIR
    return [Ledger.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def ledger_lines(cache_dir: Path, policy: SitePolicy) -> list[str]:
    """One readable line per coordinator: its DP ledger (epsilon spent at ``lifetime_delta``, releases) and counts."""
    lines = []
    for ledger in ledgers(cache_dir):
        budget = f" of {policy.max_epsilon:g} (max_epsilon)" if policy.max_epsilon is not None else " (no max_epsilon)"
        counts = ", ".join(f"{ledger.lifetime.get(kind, 0)} {_NOUNS[kind]}" for kind in Spend)
        lines.append(f"coordinator {ledger.coordinator[:16]}: DP ledger epsilon "
                     f"{ledger.epsilon_spent(policy.lifetime_delta):.3g}{budget} at delta {policy.lifetime_delta:g} "
                     f"over {len(ledger.dp)} dpdm releases; ever answered: {counts}")
    return lines


def _charge(request: DistillRequest, config: DPDMConfig) -> DPCharge:
    return DPCharge(at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), run=_hashed(request.run_id),
                    round=request.round, epsilon=config.epsilon, delta=config.delta,
                    noise_multiplier=noise_multiplier_for(config.epsilon, config.delta))


def _over(ledger: Ledger, kind: Spend, policy: SitePolicy, now: float) -> _Refusal | None:
    """The first budget limit one more ``kind`` would cross: (field, limit, message); None when there is room."""
    limits, (window_field, lifetime_field) = policy.budget, _LIMITS[kind]
    recent = _in_window(ledger, kind, policy, now)
    window_limit, lifetime_limit = getattr(limits, window_field), getattr(limits, lifetime_field)
    noun = _NOUNS[kind]
    if len(recent) >= window_limit:
        return _Refusal(f"budget.{window_field}", window_limit,
                        f"this site has given one coordinator the {window_limit} {noun} its policy allows per "
                        f"{limits.window_hours:g} h (budget.{window_field}); ask again later")
    if ledger.lifetime.get(kind, 0) >= lifetime_limit:
        return _Refusal(f"budget.{lifetime_field}", lifetime_limit,
                        f"this site has given one coordinator the {lifetime_limit} {noun} its policy allows over its "
                        f"lifetime (budget.{lifetime_field})")
    return None


def _in_window(ledger: Ledger, kind: Spend, policy: SitePolicy, now: float) -> list[float]:
    since = now - policy.budget.window_hours * 3600
    return [t for t in ledger.recent.get(kind, []) if t > since]


def _count(ledger: Ledger, kind: Spend, policy: SitePolicy, now: float) -> None:
    ledger.recent[kind] = [*_in_window(ledger, kind, policy, now), now]
    ledger.lifetime[kind] = ledger.lifetime.get(kind, 0) + 1


def _refuse(cache_dir: Path, coordinator: str, kind: Spend, run_id: str, nonce: str,
            refusal: _Refusal) -> None:
    """Record the refusal in the audit log, then raise it.

    Raises:
        PolicyError: always, naming the limit.
    """
    audit.record(cache_dir, AuditEvent.BUDGET_REFUSED, _About(run_id, nonce), "policy", spend=kind.value,
                 limit=refusal.limit, allowed=refusal.allowed, coordinator=coordinator[:16])
    raise PolicyError(refusal.message)


class _About:
    """What a refusal's audit entry is about (an evaluate or tune request carries no nonce)."""

    def __init__(self, run_id: str, nonce: str) -> None:
        self.run_id, self.nonce = run_id, nonce


def _hashed(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def _ledger_path(cache_dir: Path, coordinator: str) -> Path:
    return cache_dir / BUDGET_DIR / f"{coordinator}.json"


def _save(cache_dir: Path, ledger: Ledger) -> None:
    text = ledger.model_dump_json(indent=1) + "\n"
    write_atomically(_ledger_path(cache_dir, ledger.coordinator), lambda p: p.write_text(text))
