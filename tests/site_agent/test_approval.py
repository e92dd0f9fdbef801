"""Human review of releases: hold, review, approve or reject; a decided request is answered without distilling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coordinator.receive import Expectation, receive_bundle
from shared.datasets import dataset_info
from shared.errors import ApprovalPending, ConfigError, PolicyError, ReleaseRejected
from shared.methods import DMConfig, DPDMConfig, NetworkSpec
from shared.schemas import DistillRequest
from site_agent import audit
from site_agent.approval import APPROVED, BUNDLE_NAME, REJECTED, FolderApproval, ReleaseStatus, approval_for
from site_agent.cli import app
from site_agent.handlers import answer_distill
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.release import seal_described
from site_agent.settings import SiteSettings
from tests.conftest import deployed_site, make_request, make_synthetic

runner = CliRunner()


def _site(tmp_path: Path, privacy: PrivacyLimits) -> SiteSettings:
    """A deployed-style site that requires approval, on a small generated export."""
    return deployed_site(tmp_path, SitePolicy(require_approval=True, privacy=privacy))


def _events(cache: Path, event: str) -> list[audit.AuditEntry]:
    return [e for e in audit.verify(cache) if e.event == event]


def test_a_held_release_is_reviewed_approved_and_sent_as_stored_without_distilling_again(keys, tmp_path: Path) -> None:
    """Ask: distilled and held; ask again: still held, nothing distilled; approve (CLI); ask: the stored bytes."""
    coordinator, _ = keys
    privacy = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                            min_nearest_real_quantile=None)
    settings = _site(tmp_path, privacy)
    request = DistillRequest(run_id="r1", nonce="ef" * 32, dataset="breastmnist",
                             distill=DMConfig(ipc=2, iterations=2, batch_real=8, network=NetworkSpec(depth=2, width=16)))
    with pytest.raises(ApprovalPending, match="awaits this site's manual approval") as info:
        answer_distill(request, settings, progress=False)
    folder = Path(info.value.folder)
    assert str(folder) not in str(info.value)  # the message may travel to the coordinator; the path may not
    assert {p.name for p in folder.iterdir()} == {
        BUNDLE_NAME, "release.site-local-preview.png", "release.site-local-manifest.json", "request.json",
        "metrics.json", "privacy-report.json"}
    assert DistillRequest.model_validate_json((folder / "request.json").read_text()) == request
    stored = (folder / BUNDLE_NAME).read_bytes()
    with pytest.raises(ApprovalPending):
        answer_distill(request, settings, progress=False)
    assert len(_events(settings.cache_dir, "set_built")) == 1  # the second ask did not distill

    cache = ["--cache-dir", str(settings.cache_dir)]
    listed = runner.invoke(app, ["review", *cache])
    assert listed.exit_code == 0, listed.output
    assert f"{folder.name}  held\n  run r1: breastmnist, dm, ipc 2; MIA AUC " in listed.output
    assert f"  review page: {folder / 'review.html'}" in listed.output
    page = (folder / "review.html").read_text()
    assert "data:image/png;base64," in page and '"nonce": "' + "ef" * 32 in page
    assert runner.invoke(app, ["approve", "no-such-release", "--by", "alice", *cache]).exit_code == 1
    approved = runner.invoke(app, ["approve", folder.name, "--by", "alice", *cache])
    assert approved.exit_code == 0, approved.output
    assert json.loads((folder / APPROVED).read_text())["by"] == "alice"

    sealed, metrics = answer_distill(request, settings, progress=False)
    assert sealed == stored and metrics["synthetic-images"] == 4
    receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), coordinator, set())
    assert len(_events(settings.cache_dir, "set_built")) == 1
    (release,) = _events(settings.cache_dir, "release")
    assert release.details["bytes"] == len(stored)
    (report,) = _events(settings.cache_dir, "privacy_report")
    assert report.details["failed"] == [] and "mia_auc" in report.details
    decisions = [(e.actor, e.details["decision"]) for e in _events(settings.cache_dir, "decision")]
    assert decisions == [("policy", "held"), ("alice", "approved")]
    again = runner.invoke(app, ["reject", folder.name, "--reason", "late", "--by", "bob", *cache])
    assert again.exit_code == 1 and "already approved" in str(again.exception)


def test_a_rejected_release_is_discarded_and_refused_with_the_reviewers_reason(keys, tmp_path: Path) -> None:
    """Reject (CLI): the bundle is deleted, the request is refused as rejected (reason cut short), approval is refused."""
    _, sites = keys
    request = make_request()
    approval = FolderApproval(tmp_path / "approvals", tmp_path)
    release = seal_described(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"), 100)
    with pytest.raises(ApprovalPending):
        approval.hold(release, request, {"synthetic-images": 4.0})
    folder = approval.folder_for(request.run_id, request.nonce)
    reason = "synthetic images look too much like our patients " + "x" * 300
    rejected = runner.invoke(app, ["reject", folder.name, "--reason", reason, "--by", "bob",
                                   "--cache-dir", str(tmp_path), "--approvals-dir", str(tmp_path / "approvals")])
    assert rejected.exit_code == 0, rejected.output
    assert not (folder / BUNDLE_NAME).exists() and json.loads((folder / REJECTED).read_text())["reason"] == reason
    with pytest.raises(ReleaseRejected, match="was rejected by this site's reviewer: synthetic images look") as info:
        approval.decided(request)
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match="already rejected by bob"):
        approval.approve(folder.name, "alice")
    assert approval.get(folder.name).status == ReleaseStatus.REJECTED
    assert approval.decided(make_request(nonce="cd" * 32)) is None  # another request: nothing held for it


def test_approval_refuses_a_swapped_bundle(keys, tmp_path: Path) -> None:
    """An approved folder whose bundle answers another request is not sent."""
    _, sites = keys
    info = dataset_info("breastmnist")
    first, other = make_request(nonce="ab" * 32), make_request(nonce="cd" * 32)
    approval = FolderApproval(tmp_path / "approvals", tmp_path)
    with pytest.raises(ApprovalPending):
        approval.hold(seal_described(make_synthetic(first), first, sites["site-0"], info, 100), first, {})
    folder = approval.folder_for(first.run_id, first.nonce)
    approval.approve(folder.name, "alice")
    (folder / BUNDLE_NAME).write_bytes(seal_described(make_synthetic(other), other, sites["site-0"], info, 100).sealed)
    with pytest.raises(PolicyError, match="answers another request"):
        approval.decided(first)


def test_run_ids_and_release_ids_cannot_escape_the_approvals_folder(tmp_path: Path) -> None:
    """The run id comes from the coordinator, the release ID from the command line: neither names another folder."""
    folder = FolderApproval(tmp_path).folder_for("../../etc/x y", "ab" * 32)
    assert folder.parent == tmp_path and "/" not in folder.name and " " not in folder.name
    (tmp_path / "approvals").mkdir()
    with pytest.raises(ConfigError, match="no release with ID"):
        FolderApproval(tmp_path / "approvals").get("..")


def test_approval_for_uses_the_policys_folder(tmp_path: Path) -> None:
    """The policy's approvals_dir, else <cache-dir>/approvals."""
    settings = SiteSettings("s", tmp_path, "", SitePolicy(approvals_dir=str(tmp_path / "elsewhere")), "cpu",
                            True, tmp_path / "cache")
    assert approval_for(settings).approvals_dir == tmp_path / "elsewhere"
    default = SiteSettings("s", tmp_path, "", SitePolicy(), "cpu", True, tmp_path / "cache")
    assert approval_for(default).approvals_dir == tmp_path / "cache" / "approvals"


def test_a_request_over_the_policys_limits_is_logged_as_blocked_before_any_work(tmp_path: Path) -> None:
    """The refusal of ``policy.check`` is a decision too: the audit log shows the request and the block."""
    settings = _site(tmp_path, PrivacyLimits(report=False))
    settings = dataclasses.replace(settings, policy=SitePolicy(max_ipc=1))
    with pytest.raises(PolicyError, match="ipc"):
        answer_distill(make_request(ipc=2), settings, progress=False)
    entries = audit.verify(settings.cache_dir)
    assert [e.event.value for e in entries] == ["request_received", "decision"]
    assert entries[1].details["decision"] == "blocked" and "ipc" in str(entries[1].details["why"])


def test_the_reviewer_of_a_dp_release_sees_the_report_its_manifest_leaves_out(keys, tmp_path: Path) -> None:
    """A dpdm manifest carries no privacy figures (they are outside epsilon); the site's reviewer still gets them."""
    privacy = PrivacyLimits(shadow_models=0, train_epochs=2, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                            min_nearest_real_quantile=None)
    settings = dataclasses.replace(_site(tmp_path, privacy), policy=SitePolicy(require_approval=True, privacy=privacy,
                                                                               min_real_per_class=1))
    request = DistillRequest(run_id="r1", nonce="cd" * 32, dataset="breastmnist",
                             distill=DPDMConfig(ipc=2, iterations=2, epsilon=10.0, network=NetworkSpec(depth=2, width=16)))
    with pytest.raises(ApprovalPending) as info:
        answer_distill(request, settings, progress=False)
    folder = Path(info.value.folder)
    assert json.loads((folder / "release.site-local-manifest.json").read_text())["privacy"] is None
    listed = runner.invoke(app, ["review", "--cache-dir", str(settings.cache_dir)])
    assert listed.exit_code == 0 and "MIA AUC " in listed.output and "no privacy report" not in listed.output
    assert "threshold attack" in (folder / "review.html").read_text().lower()
