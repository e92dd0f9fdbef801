"""`site-agent history`: the site's own record of what it released, when, to which run, and how that run's
global model scored on its test images, read from its audit log."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.errors import PolicyError
from shared.methods import DMConfig, NetworkSpec
from shared.schemas import DistillRequest, EvaluateRequest, ModelSpec
from site_agent.cli import app
from site_agent.handlers import answer_distill, answer_evaluate
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.settings import SiteSettings
from tests.conftest import QUICK_TRAINING, deployed_site, signed_pool

runner = CliRunner()
NETWORK = NetworkSpec(depth=2, width=16)


def _site(tmp_path: Path) -> SiteSettings:
    """A site on a small generated export (24 training, 10 test images), no privacy shadow models, max ipc 2."""
    privacy = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                            min_nearest_real_quantile=None)
    return deployed_site(tmp_path, SitePolicy(max_ipc=2, privacy=privacy), test_labels=[0] * 4 + [1] * 6)


def _request(run_id: str, nonce: str, ipc: int) -> DistillRequest:
    return DistillRequest(run_id=run_id, nonce=nonce, dataset="breastmnist",
                          distill=DMConfig(ipc=ipc, iterations=2, batch_real=8, network=NETWORK))


def test_history_shows_each_release_its_run_and_the_score_there_and_a_refused_request(keys, tmp_path: Path) -> None:
    settings = _site(tmp_path)
    sealed, _ = answer_distill(_request("run-3", "aa" * 32, ipc=2), settings, progress=False)
    spec = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NETWORK)
    answer_evaluate(EvaluateRequest(run_id="run-3", dataset="breastmnist", model=spec, training=QUICK_TRAINING),
                    signed_pool(keys, tmp_path, "run-3"), settings)
    with pytest.raises(PolicyError, match="exceeds this site's limit"):
        answer_distill(_request("run-4", "bb" * 32, ipc=5), settings, progress=False)

    result = runner.invoke(app, ["history", "--cache-dir", str(settings.cache_dir), "--json"])
    assert result.exit_code == 0, result.output
    released, refused = json.loads(result.output)
    assert released["run_id"] == "run-3" and released["outcome"] == "released" and released["round"] == 1
    assert released["bundle_sha256"] == hashlib.sha256(sealed).hexdigest() and released["bundle_bytes"] == len(sealed)
    assert released["method"] == "dm" and released["ipc"] == 2 and released["images"] == 4
    assert released["test_images"] == 10 and 0 <= released["balanced_accuracy"] <= 1
    assert released["evaluated_at"] >= released["released_at"] >= released["asked_at"]
    assert refused["run_id"] == "run-4" and refused["outcome"] == "blocked" and "ipc 5 exceeds" in refused["why"]
    assert refused["released_at"] is None and refused["accuracy"] is None

    table = runner.invoke(app, ["history", "--cache-dir", str(settings.cache_dir)])
    assert table.exit_code == 0 and "site record (2 requests)" in table.output
    assert "released (UTC)" in table.output and "blocked" in table.output


def test_history_of_a_site_never_asked_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["history", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0 and "nothing asked of this site yet" in result.output


def test_history_reads_the_cache_join_writes_without_being_told_where(tmp_path: Path, monkeypatch) -> None:
    """One default for both: the cache join names in the node config is the one history and audit read unasked."""
    from site_agent import audit
    from site_agent.join import JoinSettings, node_config
    from site_agent.settings import site_settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    joined = node_config(JoinSettings(site_id="st-marys", key_dir=tmp_path / "keys", superlink="h:1"))
    cache = Path(joined["cache-dir"])
    assert site_settings({k: v for k, v in joined.items() if k != "cache-dir"}).cache_dir == cache  # a bare node
    audit.record(cache, audit.AuditEvent.REQUEST_RECEIVED, _request("run-9", "cc" * 32, ipc=2), "coordinator")
    (asked,) = json.loads(runner.invoke(app, ["history", "--json"]).output)
    assert asked["run_id"] == "run-9"
    assert "1 entries" in runner.invoke(app, ["audit", "verify", "--site-id", "st-marys"]).output


def test_with_several_sites_here_the_review_commands_ask_which(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for site in ("st-marys", "city-general"):
        (tmp_path / "feddistill" / site).mkdir(parents=True)
    result = runner.invoke(app, ["history"])
    assert "2 site caches" in str(result.exception) and "city-general, st-marys" in str(result.exception)
    assert "--site-id" in result.exception.hint
    assert runner.invoke(app, ["history", "--site-id", "city-general"]).exit_code == 0


def test_join_keeps_a_cache_an_earlier_version_left_in_its_home(tmp_path: Path, monkeypatch) -> None:
    """Budgets and the audit log carry on: <flwr-home>/cache, where join kept the cache before, is still used."""
    from site_agent.join import JoinSettings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    site = JoinSettings(site_id="st-marys", key_dir=tmp_path / "keys", superlink="h:1")
    (site.home() / "cache").mkdir(parents=True)
    assert site.cache() == site.home() / "cache"
    assert site.model_copy(update={"cache_dir": tmp_path / "c"}).cache() == tmp_path / "c"
