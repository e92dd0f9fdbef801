"""Issue 27, parts 1 and 3, played by a hostile coordinator against a deployed site on tiny generated data:
fresh run ids, a second set for a round, repeated DP releases, re-rolled privacy reports, and what a block says."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shared import crypto
from shared.errors import ApprovalPending, PolicyError
from shared.keys import COORDINATOR_PUB, create_coordinator_key
from shared.methods import DMConfig, DPDMConfig, NetworkSpec
from shared.schemas import DistillRequest, EvaluateRequest, ModelSpec, TuneRequest
from site_agent import audit, handlers
from site_agent.approval import approval_for
from site_agent.budget import coordinator_id, load_ledger
from site_agent.cli import app
from site_agent.client_app import _safely
from site_agent.data import load_site_images
from site_agent.distill.accounting import GaussianRelease, composed_epsilon, noise_multiplier_for
from site_agent.handlers import answer_distill, answer_evaluate, answer_tune, report_privacy, without_near_copies
from site_agent.policy import BudgetLimits, PrivacyLimits, SitePolicy
from site_agent.privacy.gate import BLOCKED, ReleaseBlocked, limit_names
from tests.conftest import QUICK_TRAINING, deployed_site, make_synthetic, signed_pool

runner = CliRunner()
CPU = torch.device("cpu")
NETWORK = NetworkSpec(depth=2, width=16)
SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NETWORK)
QUIET = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                      min_nearest_real_quantile=None)


def _distill(run_id: str, nonce: str, seed: int = 0) -> DistillRequest:
    return DistillRequest(run_id=run_id, nonce=nonce, dataset="breastmnist",
                          distill=DMConfig(ipc=2, iterations=2, batch_real=8, network=NETWORK, seed=seed))


def _dp(run_id: str, epsilon: float) -> DistillRequest:
    return DistillRequest(run_id=run_id, nonce=hashlib.sha256(run_id.encode()).hexdigest(), dataset="breastmnist",
                          distill=DPDMConfig(ipc=2, iterations=1, epsilon=epsilon, network=NETWORK))


def _events(settings, event: str) -> list[audit.AuditEntry]:
    return [e for e in audit.verify(settings.cache_dir) if e.event == event]


def test_fresh_run_ids_buy_no_more_answers_and_another_coordinator_key_has_its_own_budget(keys, tmp_path: Path) -> None:
    """The issue's probe: past the budget, evaluations and tuning queries under fresh run ids are refused by name;
    a site that pins another coordinator's key answers that coordinator from its own, fresh budget."""
    limits = BudgetLimits(max_evaluations_per_window=4, max_tunings_per_window=2)
    settings = deployed_site(tmp_path, SitePolicy(budget=limits))

    def evaluate(run_id: str) -> None:
        request = EvaluateRequest(run_id=run_id, dataset="breastmnist", model=SPEC, training=QUICK_TRAINING)
        answer_evaluate(request, signed_pool(keys, tmp_path, run_id), settings)

    def tune(run_id: str) -> None:
        request = TuneRequest(run_id=run_id, dataset="breastmnist", model=SPEC, training=QUICK_TRAINING,
                              shift=[-0.5, 0.5])
        answer_tune(request, signed_pool(keys, tmp_path, run_id), settings)

    for n in range(4):
        evaluate(f"probe-{n}")
    with pytest.raises(PolicyError, match=r"\(budget.max_evaluations_per_window\)"):
        evaluate("probe-4")
    for n in range(2):
        tune(f"t-{n}")
    with pytest.raises(PolicyError, match=r"\(budget.max_tunings_per_window\)"):
        tune("t-2")
    assert len(_events(settings, "evaluated")) == 4 and len(_events(settings, "tuning_counts")) == 2
    assert [e.details["limit"] for e in _events(settings, "budget_refused")] == [
        "budget.max_evaluations_per_window", "budget.max_tunings_per_window"]

    pinned = settings.key_dir / COORDINATOR_PUB
    first = coordinator_id(settings.site_id, settings.key_dir)
    pinned.unlink()
    crypto.save_public_key(create_coordinator_key(tmp_path / "another-coordinator"), pinned)
    evaluate("probe-4")
    second = coordinator_id(settings.site_id, settings.key_dir)
    assert first != second
    assert load_ledger(settings.cache_dir, second).lifetime == {"evaluation": 1}
    assert load_ledger(settings.cache_dir, first).lifetime == {"evaluation": 4, "tuning": 2}


def test_a_second_set_for_the_same_run_and_round_is_refused_before_any_work(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(privacy=QUIET))
    answer_distill(_distill("run-1", "aa" * 32), settings, progress=False)
    with pytest.raises(PolicyError, match=r"round 1 of run 'run-1' \(one per run and round\)"):
        answer_distill(_distill("run-1", "bb" * 32, seed=7), settings, progress=False)
    assert len(_events(settings, "set_built")) == 1 and len(_events(settings, "release")) == 1
    answer_distill(_distill("run-2", "cc" * 32), settings, progress=False)  # another run's round is its own


def test_an_approved_bundle_is_resent_but_no_second_set_is_made_for_its_round(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(require_approval=True, privacy=QUIET))
    request = _distill("run-1", "aa" * 32)
    with pytest.raises(ApprovalPending):
        answer_distill(request, settings, progress=False)
    with pytest.raises(PolicyError, match="one per run and round"):  # a fresh nonce for a second set: refused
        answer_distill(_distill("run-1", "bb" * 32), settings, progress=False)
    approvals = approval_for(settings)
    approvals.approve(approvals.releases()[0].id, "Dr A. Jones")
    sent, _ = answer_distill(request, settings, progress=False)
    again, _ = answer_distill(request, settings, progress=False)  # the coordinator asks again: the same bytes
    assert sent == again and len(_events(settings, "set_built")) == 1
    assert load_ledger(settings.cache_dir, coordinator_id("site-0", settings.key_dir)).lifetime == {"release": 1}


def test_every_release_attempt_counts_blocked_or_not(keys, tmp_path: Path, monkeypatch) -> None:
    """Re-asking after a block gets a new attempt (the round is given back: nothing left), which the budget counts."""
    settings = deployed_site(tmp_path, SitePolicy(privacy=QUIET, budget=BudgetLimits(max_release_attempts_per_window=2)))
    attempts = []

    def blocked(request: DistillRequest, *args, **kwargs):
        attempts.append(request.nonce)
        raise ReleaseBlocked(["max_mia_auc"], reasons=["max_mia_auc: the strongest attack's auc may reach 0.812"])

    monkeypatch.setattr(handlers, "prepare_release", blocked)
    for nonce in ("01" * 32, "02" * 32):
        with pytest.raises(ReleaseBlocked) as refused:
            answer_distill(_distill("run-1", nonce, seed=len(attempts)), settings, progress=False)
        assert str(refused.value) == BLOCKED
    with pytest.raises(PolicyError, match=r"2 release attempts .* \(budget.max_release_attempts_per_window\)"):
        answer_distill(_distill("run-1", "03" * 32, seed=9), settings, progress=False)
    assert len(attempts) == 2
    decisions = _events(settings, "decision")
    assert "0.812" in decisions[0].details["why"]  # the figure stays in the site's own audit log


def test_repeated_dp_releases_stop_at_the_lifetime_epsilon_before_any_distillation(keys, tmp_path: Path,
                                                                                monkeypatch) -> None:
    """The issue's averaging attack: sets at epsilon 0.5 under fresh runs against max_epsilon 1. The PLD accountant
    composes three to 0.91 (a hand sum, 1.5, would have refused the third); the fourth would make 1.07 and is
    refused before any distillation. At epsilon 1 each, the second is refused."""
    policy = SitePolicy(require_dp=True, max_epsilon=1.0, privacy=QUIET)
    settings = deployed_site(tmp_path, policy)
    distilled = []

    def prepared(request: DistillRequest, *args, **kwargs):
        distilled.append(request.run_id)
        return SimpleNamespace(sealed=f"sealed {request.run_id}".encode()), {}

    monkeypatch.setattr(handlers, "prepare_release", prepared)
    for k in range(3):
        answer_distill(_dp(f"run-{k}", 0.5), settings, progress=False)
    with pytest.raises(PolicyError, match=r"to 1.0\d .*lifetime budget of 1 \(max_epsilon\)"):
        answer_distill(_dp("run-3", 0.5), settings, progress=False)
    assert distilled == ["run-0", "run-1", "run-2"]
    ledger = load_ledger(settings.cache_dir, coordinator_id("site-0", settings.key_dir))
    spent = ledger.epsilon_spent(policy.lifetime_delta)
    assert spent == pytest.approx(composed_epsilon([GaussianRelease(noise_multiplier_for(0.5, 1e-5))] * 3, 1e-5))
    assert spent < policy.max_epsilon < 3 * 0.5  # a hand sum would have refused the third

    # The ledger, where the site's operator reads it.
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(policy.model_dump_json())
    for command in (["history"], ["audit", "show"]):
        shown = runner.invoke(app, [*command, "--cache-dir", str(settings.cache_dir), "--policy", str(policy_file)])
        assert shown.exit_code == 0, shown.output
        assert f"DP ledger epsilon {spent:.3g} of 1 (max_epsilon) at delta 1e-05 over 3 dpdm releases" in shown.output
    rows = json.loads(runner.invoke(app, ["history", "--cache-dir", str(settings.cache_dir), "--json"]).output)
    assert [r["ledger_releases"] for r in rows if r["epsilon"]] == [1, 2, 3]
    assert rows[2]["epsilon_spent"] == pytest.approx(spent, abs=1e-6) and rows[3]["outcome"] == "blocked"

    fresh = dataclasses.replace(settings, cache_dir=tmp_path / "fresh-cache")
    answer_distill(_dp("run-a", 1.0), fresh, progress=False)
    with pytest.raises(PolicyError, match="max_epsilon"):
        answer_distill(_dp("run-b", 1.0), fresh, progress=False)


def _figures(summary) -> dict:
    return summary.model_dump(exclude={"seconds"})


def test_the_report_is_the_same_whatever_seed_the_request_names_and_another_site_draws_its_own(keys, tmp_path) -> None:
    """Re-rolling: the same set, asked for under other seeds, run ids and nonces, gets the same report at the
    same site (its secret, not the request, seeds the models, the shadow sets and the bootstrap)."""
    limits = PrivacyLimits(shadow_models=2, train_epochs=3, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                           min_nearest_real_quantile=None)
    settings = deployed_site(tmp_path, SitePolicy(privacy=limits, min_real_per_class=4))  # shadows on halves
    images = load_site_images("breastmnist", settings.data_root)
    synthetic = make_synthetic(_distill("run-1", "aa" * 32))
    reports = [report_privacy(synthetic, images, _distill(f"run-{seed}", hashlib.sha256(bytes([seed % 256])).hexdigest(), seed=seed), settings, CPU)
               for seed in (0, 1, 4242)]
    assert reports[0].shadow_models == 2 and reports[0].threshold_attack is not None
    assert _figures(reports[0]) == _figures(reports[1]) == _figures(reports[2])
    elsewhere = dataclasses.replace(settings, cache_dir=tmp_path / "another-site-cache")
    assert _figures(report_privacy(synthetic, images, _distill("run-0", "00" * 32), elsewhere, CPU)) != _figures(reports[0])
    secret = settings.cache_dir / "privacy-report.secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32


def test_a_blocked_release_tells_the_coordinator_no_limit_and_no_figure(keys, tmp_path: Path) -> None:
    """Copies of training images fail the gate at every request seed, and what travels (our error's text, which
    the ClientApp lets through) is the one sentence; the limits and figures stay in the site's log."""
    settings = deployed_site(tmp_path, SitePolicy(privacy=PrivacyLimits(shadow_models=0, train_epochs=2)))
    images = load_site_images("breastmnist", settings.data_root)
    copies = make_synthetic(_distill("run-1", "aa" * 32), images=images.train.images[[0, 1, 12, 13]])
    names = [*limit_names(settings.policy.privacy), "max_real_similarity", "quantile", "auc", "tpr"]
    failed = set()
    for seed in (0, 1, 2):
        with pytest.raises(ReleaseBlocked) as blocked:
            _safely(lambda seed=seed: report_privacy(copies, images, _distill("run-1", "aa" * 32, seed), settings, CPU))
        text = str(blocked.value)
        assert text == BLOCKED and not any(ch.isdigit() for ch in text) and not any(n in text for n in names)
        assert "min_nearest_real_quantile" in blocked.value.failed and "4 synthetic images" in blocked.value.local_detail
        failed.add(tuple(blocked.value.failed))
    assert len(failed) == 1  # the same verdict every time
    with pytest.raises(ReleaseBlocked) as near_copy:
        without_near_copies(copies, images.train, settings.policy, copies.config.init)
    assert str(near_copy.value) == BLOCKED and "correlation 1.000" in near_copy.value.local_detail
    assert np.isclose(copies.images.numpy(), images.train.images[[0, 1, 12, 13]]).all()
