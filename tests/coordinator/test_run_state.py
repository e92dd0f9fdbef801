"""Resuming a stopped run: stored requests and bundles, re-verified before they count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator import run_state
from coordinator.receive import Expectation, receive_bundle
from shared.config import RunConfig
from shared.datasets import dataset_info
from shared.errors import ConfigError, ReplayError
from site_agent.release import seal_release
from tests.conftest import make_request, make_synthetic


def test_resume_reopens_stored_bundles_only_for_the_request_on_record(keys, tmp_path: Path) -> None:
    """A stored bundle re-verifies against the stored request; after a new nonce replaces it, it no longer does."""
    coordinator, sites = keys
    config = RunConfig(run_dir=str(tmp_path))
    state, _ = run_state.start(tmp_path, config)
    request = make_request(run_id=state.run_id)
    state.requests["site-0"] = request
    run_state.save(tmp_path, state)
    (tmp_path / "run_config.json").write_text(json.dumps(config.to_flower()))
    sealed = seal_release(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"), 10)
    run_state.store_bundle(tmp_path, "site-0", sealed)

    with pytest.raises(ConfigError, match="already holds a run"):
        run_state.start(tmp_path, config)
    resumed, resumed_config = run_state.start(tmp_path, config.model_copy(update={"resume": True, "min_sites": 1}))
    assert resumed.run_id == state.run_id and resumed_config.min_sites == 1
    stored = run_state.stored_bundles(tmp_path, resumed)
    expectation = Expectation(resumed.requests["site-0"], (1, 28, 28), 2, 1 << 20, "site-0")
    assert receive_bundle(stored["site-0"], expectation, coordinator, set()).manifest.site_id == "site-0"

    replaced = make_request(run_id=state.run_id, nonce="cd" * 32)
    with pytest.raises(ReplayError, match="nonce"):
        receive_bundle(stored["site-0"], Expectation(replaced, (1, 28, 28), 2, 1 << 20, "site-0"), coordinator, set())
    with pytest.raises(ConfigError, match="no stopped run"):
        run_state.start(tmp_path / "elsewhere", config.model_copy(update={"resume": True}))


def test_resumed_run_counts_valid_stored_bundles_and_asks_again_for_tampered_ones(keys, tmp_path: Path) -> None:
    """On resume a stored valid bundle counts as delivered (its site is not asked again); a tampered one does not."""
    coordinator, sites = keys
    state = run_state.RunState(run_id="run-x")
    for site in ("site-0", "site-1"):
        state.requests[site] = make_request(run_id="run-x", nonce=(site[-1] * 64))
        sealed = seal_release(make_synthetic(state.requests[site]), state.requests[site], sites[site],
                              dataset_info("breastmnist"), 10)
        run_state.store_bundle(tmp_path, site, sealed if site == "site-0" else sealed[:-1] + bytes([sealed[-1] ^ 1]))
    valid = run_state.reverify_stored(tmp_path, state, lambda req, site: Expectation(req, (1, 28, 28), 2, 1 << 20, site),
                                      coordinator)
    assert list(valid) == ["site-0"] and valid["site-0"].manifest.site_id == "site-0"


def test_a_resumed_run_asks_a_site_awaiting_approval_the_same_request(tmp_path: Path) -> None:
    """Its reviewed release answers only the nonce on record; every other site gets a fresh request."""
    state = run_state.RunState(run_id="run-x")
    held, other = make_request(run_id="run-x", nonce="ab" * 32), make_request(run_id="run-x", nonce="cd" * 32)
    state.record_request("site-0", held, "site-0")
    state.record_request("site-1", other, "site-1")
    state.awaiting_approval = ["site-0"]
    run_state.save(tmp_path, state)
    resumed = run_state.RunState.model_validate_json((tmp_path / run_state.STATE).read_text())
    fresh = make_request(run_id="run-x", nonce="ef" * 32)
    assert resumed.request_to_send("site-0", fresh) == held and resumed.request_to_send("site-1", fresh) == fresh
    resumed.next_round({})
    assert resumed.awaiting_approval == [] and resumed.request_to_send("site-0", fresh) == fresh


def test_a_resume_keeps_the_earlier_attempts_report_and_names_it(tmp_path: Path) -> None:
    """The stopped attempt's summary and report move to attempts/1/; the resumed run's report says how it ended."""
    from coordinator import report
    from coordinator.summary import EarlierAttempt, RunStatus, RunSummary, read_summary

    config = RunConfig(dataset="breastmnist", method="idm", ipc=1, iterations=2, sites=3)
    first = RunSummary.begun(config, "run-7", RunStatus.FAILED, "1 valid bundles, fewer than min-sites=2")
    first.sites_accepted = 1
    report.write_summary(tmp_path, first)
    assert report.keep_earlier_attempt(tmp_path) == tmp_path / "attempts" / "1"
    assert not (tmp_path / "report.md").exists() and "min-sites=2" in (tmp_path / "attempts/1/report.md").read_text()
    report.write_summary(tmp_path, first.model_copy(update={"status": RunStatus.COMPLETED, "sites_accepted": 3,
                                                            "error": ""}))
    summary = read_summary(tmp_path)
    assert summary.status == "completed"
    assert summary.earlier_attempts == [EarlierAttempt(folder="attempts/1", status="failed", sites_accepted=1,
                                                       error="1 valid bundles, fewer than min-sites=2")]
    assert "earlier attempt (attempts/1/report.md) ended failed" in (tmp_path / "report.md").read_text()
    assert report.keep_earlier_attempt(tmp_path) == tmp_path / "attempts" / "2"  # a second resume keeps both
    assert (tmp_path / "attempts/1/summary.json").is_file()
