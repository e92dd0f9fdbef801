"""The site policy file (validation, MTT caps, time limit, `policy init/show`) and the manual-approval hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from coordinator.receive import Expectation, receive_bundle
from shared.datasets import dataset_info
from shared.errors import ApprovalPending, ConfigError, PolicyError
from shared.schemas import DistillRequest, DMConfig, MTTConfig, NetworkSpec
from site_agent.approval import APPROVED, BUNDLE_NAME, FolderApproval, approval_for
from site_agent.cli import app
from site_agent.handlers import answer_distill
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.release import seal_described
from site_agent.settings import SiteSettings
from tests.conftest import make_request, make_synthetic

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"max_ipc": "lots"}', "'policy.json' is not a valid policy: field 'max_ipc'"),
        ('{"max_ipcs": 5}', "field 'max_ipcs': Extra inputs are not permitted"),
        ('{"mtt": {"max_syn_steps": 0}}', "field 'mtt.max_syn_steps'"),
        ('{"max_seconds": -1}', "field 'max_seconds'"),
        ('{"allowed_methods": ["dc", "gan"]}', "field 'allowed_methods.1'"),
        ('{"max_ipc": 5,}', r"not JSON \(line 1"),
    ],
)
def test_policy_file_errors_name_the_field(tmp_path: Path, text: str, match: str) -> None:
    """A bad policy file is a ConfigError naming the first bad field (or where the JSON breaks)."""
    (tmp_path / "policy.json").write_text(text)
    with pytest.raises(ConfigError, match=match):
        SitePolicy.from_file(tmp_path / "policy.json")


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    """A missing file is named by its file name only."""
    with pytest.raises(ConfigError, match="'nope.json' not found"):
        SitePolicy.from_file(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("change", "match"),
    [({"syn_steps": 60}, "mtt syn_steps 60 exceeds"), ({"num_experts": 21}, "mtt num_experts 21 exceeds"),
     ({"train_epochs_expert": 60}, "mtt train_epochs_expert 60 exceeds")],
)
def test_mtt_caps_refuse_costly_requests(change: dict, match: str) -> None:
    """MTT's expensive knobs have site caps the coordinator cannot raise."""
    request = make_request().model_copy(update={"distill": MTTConfig(**change)})
    with pytest.raises(PolicyError, match=match):
        SitePolicy().check(request)
    SitePolicy.permissive(allow_real_init=False).check(request)  # a simulated site takes the run's settings


def test_time_limit_is_exposed_for_the_engine() -> None:
    """max_seconds is a plain policy value (None: no limit) for the distill engine to stop at."""
    assert SitePolicy().max_seconds is None and SitePolicy(max_seconds=90).max_seconds == 90


def test_policy_init_then_show(tmp_path: Path) -> None:
    """`policy init` writes the defaults (never over a file); `policy show` validates and explains it."""
    path = tmp_path / "policy.json"
    assert runner.invoke(app, ["policy", "init", "--path", str(path)]).exit_code == 0
    assert SitePolicy.from_file(path) == SitePolicy()
    again = runner.invoke(app, ["policy", "init", "--path", str(path)])
    assert isinstance(again.exception, ConfigError) and "already exists" in str(again.exception)
    shown = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert shown.exit_code == 0 and "require_approval" in shown.output and "mtt.max_syn_steps" in shown.output
    path.write_text('{"max_iterations": 0}')
    bad = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert isinstance(bad.exception, ConfigError) and "max_iterations" in str(bad.exception)


def test_folder_approval_holds_then_sends_the_reviewed_bundle(keys, tmp_path: Path) -> None:
    """First ask: written for review and refused; once APPROVED, the stored (reviewed) bytes are sent."""
    _, sites = keys
    request = make_request()
    release = seal_described(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"), 100)
    approval = FolderApproval(tmp_path / "approvals")
    with pytest.raises(ApprovalPending, match="awaits this site's manual approval") as info:
        approval.approve(release)
    folder = Path(info.value.folder)
    assert str(folder) not in str(info.value)  # the message may travel to the coordinator; the path may not
    assert {p.name for p in folder.iterdir()} == {
        BUNDLE_NAME, "release.site-local-preview.png", "release.site-local-manifest.json"}
    again = seal_described(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"), 100)
    with pytest.raises(ApprovalPending):
        approval.approve(again)
    (folder / APPROVED).touch()
    assert approval.approve(again) == release.sealed != again.sealed


def test_approval_refuses_a_swapped_bundle(keys, tmp_path: Path) -> None:
    """An approved folder whose bundle answers another request is not sent."""
    _, sites = keys
    info = dataset_info("breastmnist")
    first, other = make_request(nonce="ab" * 32), make_request(nonce="cd" * 32)
    approval = FolderApproval(tmp_path)
    release = seal_described(make_synthetic(first), first, sites["site-0"], info, 100)
    folder = approval.folder_for(first.run_id, first.nonce)
    folder.mkdir()
    (folder / APPROVED).touch()
    (folder / BUNDLE_NAME).write_bytes(seal_described(make_synthetic(other), other, sites["site-0"], info, 100).sealed)
    with pytest.raises(PolicyError, match="answers another request"):
        approval.approve(release)


def test_run_ids_cannot_escape_the_approvals_folder(tmp_path: Path) -> None:
    """The run id comes from the coordinator: it is made safe before it names a folder."""
    folder = FolderApproval(tmp_path).folder_for("../../etc/x y", "ab" * 32)
    assert folder.parent == tmp_path and "/" not in folder.name and " " not in folder.name


def test_answer_distill_waits_for_approval_when_the_policy_requires_it(keys, tmp_path: Path) -> None:
    """With require_approval, the ClientApp's handler sends nothing until the release is approved."""
    coordinator, _ = keys
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 12)
    images = np.clip(rng.integers(40, 215, (2, 28, 28))[labels] + rng.normal(0, 20, (24, 28, 28)), 0, 255)
    np.savez(tmp_path / "export.npz", train_images=images.astype(np.uint8), train_labels=labels)
    policy = SitePolicy(require_approval=True, approvals_dir=str(tmp_path / "approvals"),
                        privacy=PrivacyLimits(report=False))
    settings = SiteSettings(site_id="site-0", key_dir=tmp_path / "keys" / "site-0", data_root=str(tmp_path / "export.npz"),
                            partition=None, policy=policy, device="cpu", verify_md5=True, simulated=False,
                            cache_dir=tmp_path / "cache")
    request = DistillRequest(run_id="r1", nonce="ef" * 32, dataset="breastmnist",
                             distill=DMConfig(ipc=2, iterations=2, batch_real=8, network=NetworkSpec(depth=2, width=16)))
    with pytest.raises(ApprovalPending):
        answer_distill(request, settings, progress=False)
    folder = approval_for(settings).folder_for(request.run_id, request.nonce)
    (folder / APPROVED).touch()
    sealed, metrics = answer_distill(request, settings, progress=False)
    assert sealed == (folder / BUNDLE_NAME).read_bytes() and metrics["synthetic-images"] == 4
    receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), coordinator, set())
