"""The site's budgets per coordinator key, whatever run ids it names (site_agent.budget), played by a hostile coordinator."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from shared.errors import PolicyError
from shared.methods import DPDMConfig
from shared.schemas import DistillRequest
from site_agent import audit, budget
from site_agent.budget import Spend, free_round, load_ledger, spend_answer, take_release
from site_agent.distill.accounting import GaussianRelease, composed_epsilon, noise_multiplier_for
from site_agent.policy import BudgetLimits, SitePolicy
from tests.conftest import make_request

ALICE, MALLORY = "a" * 64, "b" * 64  # two coordinators' key fingerprints


def _policy(**limits) -> SitePolicy:
    return SitePolicy(budget=BudgetLimits(**limits))


def test_renaming_runs_does_not_reset_the_evaluation_budget_and_another_coordinator_has_its_own(tmp_path: Path) -> None:
    """Three evaluations under three fresh run ids use the window; the fourth, under a fourth, is refused by name."""
    policy = _policy(max_evaluations_per_window=3)
    for n in range(3):
        spend_answer(tmp_path, ALICE, Spend.EVALUATION, f"fresh-{n}", policy)
    with pytest.raises(PolicyError, match=r"3 evaluations .* per 24 h \(budget.max_evaluations_per_window\)"):
        spend_answer(tmp_path, ALICE, Spend.EVALUATION, "fresh-3", policy)
    assert load_ledger(tmp_path, ALICE).lifetime[Spend.EVALUATION] == 3  # the refusal spent nothing
    refused = [e for e in audit.verify(tmp_path) if e.event == "budget_refused"]
    assert len(refused) == 1 and refused[0].run_id == "fresh-3"
    assert refused[0].details == {"spend": "evaluation", "limit": "budget.max_evaluations_per_window", "allowed": 3,
                                  "coordinator": ALICE[:16]}
    spend_answer(tmp_path, MALLORY, Spend.EVALUATION, "fresh-0", policy)  # another key, its own count
    spend_answer(tmp_path, ALICE, Spend.TUNING, "fresh-4", policy)  # tuning has its own limits


def test_the_window_rolls_but_the_lifetime_count_does_not(tmp_path: Path, monkeypatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(budget.time, "time", lambda: now[0])
    policy = _policy(max_tunings_per_window=2, max_tunings_lifetime=3, window_hours=1)
    spend_answer(tmp_path, ALICE, Spend.TUNING, "r1", policy)
    spend_answer(tmp_path, ALICE, Spend.TUNING, "r2", policy)
    with pytest.raises(PolicyError, match="max_tunings_per_window"):
        spend_answer(tmp_path, ALICE, Spend.TUNING, "r3", policy)
    now[0] += 3601  # an hour later the window has room again, for one more: the lifetime has three
    spend_answer(tmp_path, ALICE, Spend.TUNING, "r4", policy)
    now[0] += 3601
    with pytest.raises(PolicyError, match=r"3 tuning answers its policy allows over its lifetime "
                                          r"\(budget.max_tunings_lifetime\)"):
        spend_answer(tmp_path, ALICE, Spend.TUNING, "r5", policy)


def test_the_per_run_cap_still_holds_beside_the_budgets(tmp_path: Path) -> None:
    policy = SitePolicy(max_evaluations_per_run=2)
    spend_answer(tmp_path, ALICE, Spend.EVALUATION, "../../etc/passwd", policy)
    spend_answer(tmp_path, ALICE, Spend.TUNING, "../../etc/passwd", policy)
    with pytest.raises(PolicyError, match=r"2 evaluations this site's policy allows per run \(max_evaluations_per_run\)"):
        spend_answer(tmp_path, ALICE, Spend.EVALUATION, "../../etc/passwd", policy)
    assert [p.name for p in (tmp_path / "budget").iterdir() if not p.name.startswith(".")] == [f"{ALICE}.json"]


def _spend_one(cache: str, results) -> None:
    try:
        spend_answer(Path(cache), ALICE, Spend.EVALUATION, "race", _policy(max_evaluations_per_window=1))
        results.put("answered")
    except PolicyError:
        results.put("refused")


def test_concurrent_task_processes_cannot_both_spend_the_last_unit(tmp_path: Path) -> None:
    """Six processes race for the one evaluation left: the lock lets exactly one through."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = [context.Process(target=_spend_one, args=(str(tmp_path), results)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in processes)
    assert outcomes == ["answered"] + ["refused"] * 5
    assert load_ledger(tmp_path, ALICE).lifetime[Spend.EVALUATION] == 1


def test_one_release_per_run_and_round_and_every_attempt_counts(tmp_path: Path) -> None:
    """A second release for the same (run, round) is refused whatever its nonce; a round whose attempt sealed
    nothing can be tried again, as a new attempt; attempts, not releases, use the budget."""
    policy = _policy(max_release_attempts_per_window=3)
    first = make_request("run-1", "01" * 32)
    take_release(tmp_path, ALICE, first, policy)
    with pytest.raises(PolicyError, match=r"already took on a release for round 1 of run 'run-1' \(one per run and round\)"):
        take_release(tmp_path, ALICE, make_request("run-1", "02" * 32), policy)
    take_release(tmp_path, ALICE, first.model_copy(update={"run_id": "run-2"}), policy)
    free_round(tmp_path, ALICE, first)  # say it was blocked: nothing sealed
    take_release(tmp_path, ALICE, make_request("run-1", "03" * 32), policy)  # the third attempt
    with pytest.raises(PolicyError, match="max_release_attempts_per_window"):
        take_release(tmp_path, ALICE, make_request("run-3", "04" * 32), policy)
    take_release(tmp_path, MALLORY, make_request("run-1", "05" * 32), policy)  # per coordinator key


def _dp_request(run_id: str, epsilon: float) -> DistillRequest:
    return DistillRequest(run_id=run_id, nonce="0d" * 32, dataset="breastmnist",
                          distill=DPDMConfig(ipc=2, iterations=1, epsilon=epsilon))


def test_the_dp_ledger_composes_with_the_pld_accountant_not_a_hand_sum(tmp_path: Path) -> None:
    """Releases at epsilon 0.5 against a lifetime budget of 1: the PLD composition of three is 0.91 (a hand sum
    would say 1.5 and refuse the third), of four 1.07: the fourth is refused, whatever run it names."""
    policy = SitePolicy(require_dp=True, max_epsilon=1.0)
    z = noise_multiplier_for(0.5, 1e-5)
    for k in range(1, 4):
        ledger = take_release(tmp_path, ALICE, _dp_request(f"run-{k}", 0.5), policy)
        spent = ledger.epsilon_spent(policy.lifetime_delta)
        assert spent == pytest.approx(composed_epsilon([GaussianRelease(z)] * k, 1e-5))
    assert 0.85 < spent < 1.0 < 3 * 0.5
    with pytest.raises(PolicyError, match=r"from 0.91\d* to 1.0\d* .*lifetime budget of 1 \(max_epsilon\)"):
        take_release(tmp_path, ALICE, _dp_request("run-4", 0.5), policy)
    assert len(load_ledger(tmp_path, ALICE).dp) == 3  # the refused one is not charged
    charged = [e for e in audit.verify(tmp_path) if e.event == "dp_spent"]
    assert [e.details["releases"] for e in charged] == [1, 2, 3]
    assert charged[-1].details["epsilon_spent"] == pytest.approx(spent, abs=1e-6)
    # A larger delta per release costs more epsilon at the ledger's delta: the accountant, not the request, says.
    fresh = tmp_path / "other"
    ledger = take_release(fresh, ALICE, _dp_request("run-1", 0.5).model_copy(
        update={"distill": DPDMConfig(ipc=2, iterations=1, epsilon=0.5, delta=1e-3)}), policy)
    assert ledger.epsilon_spent(policy.lifetime_delta) > 0.5
