"""`site-agent distill` and `inspect`: a site-local preview bundle that the coordinator's receive path opens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from coordinator.receive import Expectation, receive_bundle
from coordinator.trust import create_simulation_keys, load_coordinator_keys
from shared.errors import InvalidBundle, PolicyError, VerificationError
from shared.manifest import BundleManifest
from shared.schemas import DistillRequest
from site_agent.cli import app
from site_agent.preview import PREVIEW_RUN_ID, site_local_files, summarize_bundle

runner = CliRunner()


def write_export(path: Path, per_class: int = 12) -> Path:
    """A tiny BreastMNIST-shaped .npz export: two classes of smooth random 28x28 images."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], per_class)
    base = rng.integers(40, 215, size=(2, 28, 28))
    images = np.clip(base[labels] + rng.normal(0, 20, size=(len(labels), 28, 28)), 0, 255).astype(np.uint8)
    np.savez(path, train_images=images, train_labels=labels[:, None], test_images=images[:4], test_labels=labels[:4])
    return path


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """Simulation-style keys for site-0 (pinned coordinator key) and a data export."""
    coordinator_dir = create_simulation_keys(tmp_path / "keys", ["site-0", "site-1"])
    # A report quick enough for a test, with limits that 4 held-out images cannot meaningfully test.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"privacy": {"train_epochs": 5, "shadow_models": 0, "max_mia_auc": None,
                                              "max_mia_tpr_at_0_1pct_fpr": None}}))
    return {"coordinator": coordinator_dir, "keys": tmp_path / "keys" / "site-0", "policy": policy,
            "other": tmp_path / "keys" / "site-1", "data": write_export(tmp_path / "export.npz")}


def distill_args(site: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["distill", "--data", str(site["data"]), "--dataset", "breastmnist", "--method", "dm", "--ipc", "2",
            "--iterations", "2", "--out", str(out), "--key-dir", str(site["keys"]), "--site-id", "site-0",
            "--device", "cpu", "--cache-dir", str(out.parent / "cache"), "--policy", str(site["policy"]), *extra]


def test_distill_writes_a_bundle_the_coordinator_accepts(site: dict[str, Path], tmp_path: Path) -> None:
    """The preview bundle is sealed to the pinned key, signed by the site, and passes receive_bundle."""
    out = tmp_path / "out" / "bundle.fdsb"
    result = runner.invoke(app, distill_args(site, out))
    assert result.exit_code == 0, result.output
    files = site_local_files(out)
    assert files.preview.name == "bundle.site-local-preview.png" and files.preview.stat().st_size > 0
    manifest = BundleManifest.model_validate_json(files.manifest.read_text())
    assert manifest.run_id.startswith(PREVIEW_RUN_ID) and manifest.class_counts == {0: 2, 1: 2}
    request = DistillRequest(run_id=manifest.run_id, nonce=manifest.nonce, dataset="breastmnist",
                             distill=manifest.distill)
    keys = load_coordinator_keys(site["coordinator"])
    opened = receive_bundle(out.read_bytes(), Expectation(request, (1, 28, 28), 2, 1 << 20), keys, set())
    assert opened.images.shape == (4, 1, 28, 28) and opened.manifest == manifest
    assert manifest.privacy is not None and manifest.privacy.non_members == 4  # signed, numbers only
    assert "threshold attack: AUC" in result.output and "privacy-report.html" in result.output


def test_inspect_shows_the_header_and_opens_with_the_coordinator_key(site: dict[str, Path], tmp_path: Path) -> None:
    """Without keys only the clear header shows; with them the bundle opens, verifies and is drawn."""
    out = tmp_path / "bundle.fdsb"
    assert runner.invoke(app, distill_args(site, out)).exit_code == 0
    header = summarize_bundle(out.read_bytes()).header
    plain = runner.invoke(app, ["inspect", str(out)])
    assert plain.exit_code == 0 and header.run_id in plain.output and "ciphertext_bytes" in plain.output
    grid = tmp_path / "grid.png"
    opened = runner.invoke(app, ["inspect", str(out), "--coordinator-key", str(site["coordinator"] / "coordinator.key"),
                                 "--site-key", str(site["keys"] / "signing.pub"), "--grid", str(grid)])
    assert opened.exit_code == 0, opened.output
    assert "signature verified" in opened.output and '"site_id": "site-0"' in opened.output
    assert grid.stat().st_size > 0


def test_inspect_refuses_another_sites_key_and_a_non_bundle(site: dict[str, Path], tmp_path: Path) -> None:
    """Verification against the wrong site key fails; a file that is not a bundle is named as such."""
    out = tmp_path / "bundle.fdsb"
    assert runner.invoke(app, distill_args(site, out)).exit_code == 0
    wrong = runner.invoke(app, ["inspect", str(out), "--coordinator-key", str(site["coordinator"] / "coordinator.key"),
                                "--site-key", str(site["other"] / "signing.pub")])
    assert isinstance(wrong.exception, VerificationError)
    (tmp_path / "junk.fdsb").write_bytes(b"hello")
    assert isinstance(runner.invoke(app, ["inspect", str(tmp_path / "junk.fdsb")]).exception, InvalidBundle)


def test_distill_obeys_the_site_policy(site: dict[str, Path], tmp_path: Path) -> None:
    """The preview goes through the same policy check as a coordinator's request."""
    policy = tmp_path / "policy.json"
    policy.write_text('{"max_ipc": 1}')
    result = runner.invoke(app, distill_args(site, tmp_path / "b.fdsb", "--policy", str(policy)))
    assert isinstance(result.exception, PolicyError) and "ipc 2 exceeds" in str(result.exception)
    assert not (tmp_path / "b.fdsb").exists()


@pytest.mark.parametrize("method", ["dc", "dm", "mtt", "idm"])
def test_preview_runs_what_a_default_federation_run_asks(site: dict[str, Path], tmp_path: Path, monkeypatch,
                                                        method: str) -> None:
    """Without --iterations the preview distills the method's CPU preset, exactly as a federation request does."""
    from shared.config import RunConfig
    from shared.methods import DistillMethod
    from shared.presets import PRESET_ITERATIONS
    from site_agent import cli_tools

    asked = []

    def capture(request, settings, progress=True):
        asked.append(request.distill)
        raise SystemExit(0)

    monkeypatch.setattr(cli_tools, "prepare_release", capture)
    args = ["distill", "--data", str(site["data"]), "--dataset", "breastmnist", "--method", method,
            "--out", str(tmp_path / "b.fdsb"), "--key-dir", str(site["keys"])]
    runner.invoke(app, args)
    federation = RunConfig.from_flower({"method": method, "iterations": 0})  # a run leaving iterations at 0
    assert asked == [federation.distill_config()]
    assert asked[0].iterations == PRESET_ITERATIONS[DistillMethod(method)]
    runner.invoke(app, args[:5] + args[7:])  # no --method: the federation's default method
    assert asked[-1] == RunConfig().distill_config()
