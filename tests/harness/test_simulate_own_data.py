"""`coordinator simulate` partitions a hospital's own export, not only an official MedMNIST file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.summary import read_summary
from harness.simulate import simulate
from harness.sites import export_path, remove_run_shares, write_run_shares
from shared.config import RunConfig
from shared.errors import DataError, FederationError
from site_agent.data import load_site_images
from tests.conftest import blobs

TINY = {"dataset": "breastmnist", "method": "dm", "ipc": 2, "iterations": 3, "batch_real": 16, "net_width": 16,
        "train_epochs": 5, "sites": 2, "min_sites": 2, "partition": "iid", "node_wait_timeout": 60.0}


def _export(path: Path) -> Path:
    """A .npz export with MedMNIST's keys, in the uint8 (N, H, W) layout a hospital would write."""
    def raw(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        data = blobs(per_class=per_class, size=28, seed=seed)
        return np.round((data.images[:, 0] + 1) * 127.5).astype(np.uint8), data.labels.reshape(-1, 1)

    (train_x, train_y), (test_x, test_y) = raw(30, 0), raw(10, 1)
    np.savez(path, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    return path


def test_unreadable_data_is_refused_before_flower_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data root that is neither a .npz file nor a folder of images fails at once, saying what it expected."""
    import flwr.simulation

    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **_: pytest.fail("Flower started"))
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(DataError, match="expected a .npz file"):
        simulate(RunConfig(data_root=str(tmp_path / "notes.txt"), out_dir=str(tmp_path / "out")))


def test_each_simulated_site_reads_its_share_as_a_hospital_export(tmp_path: Path) -> None:
    """The harness writes each share as an export a site reads like --data; the shares split the whole data."""
    config = RunConfig(data_root=str(_export(tmp_path / "export.npz")), out_dir=str(tmp_path / "out"), **TINY)
    run_dir = tmp_path / "out" / "run-1"
    shares = write_run_shares(config, run_dir)
    read = [load_site_images("breastmnist", str(export_path(config, run_dir, s.site_id))) for s in shares]
    for share, site in zip(shares, read, strict=True):
        assert np.array_equal(site.train.images, share.images.train.images)  # exact: uint8 round trip
        assert np.array_equal(site.test.labels, share.images.test.labels)
    assert sum(len(site.train) for site in read) == 60 and sum(len(site.test) for site in read) == 20
    assert not list(run_dir.rglob("*.npz")) if run_dir.exists() else True  # never in the results folder
    remove_run_shares(config, run_dir)
    assert not any(export_path(config, run_dir, s.site_id).exists() for s in shares)


def test_ctrl_c_leaves_a_note_and_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr.simulation

    def interrupted(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(flwr.simulation, "run_simulation", interrupted)
    config = RunConfig(data_root=str(_export(tmp_path / "export.npz")), out_dir=str(tmp_path / "out"), **TINY)
    with pytest.raises(FederationError, match="interrupted: .* continue with"):
        simulate(config)
    [run_dir] = [path for path in (tmp_path / "out").iterdir() if not path.name.startswith(".")]
    assert (run_dir / "INTERRUPTED").is_file() and read_summary(run_dir).status == "interrupted"
    assert not list((tmp_path / "out" / ".site-cache").rglob("*.npz"))  # the sites' data copies are removed


@pytest.mark.flower
def test_simulation_partitions_a_hospital_export(tmp_path: Path) -> None:
    """Two simulated sites share out a local .npz export; every test image is scored once."""
    config = RunConfig(data_root=str(_export(tmp_path / "export.npz")), out_dir=str(tmp_path / "out"), **TINY)
    run_dir, summary = simulate(config)
    assert summary.status == "completed" and summary.sites_accepted == 2
    assert summary.global_model.num_examples == 20 and summary.global_model.class_counts == [10, 10]
    # The simulation's own yardstick: the same number of real images, scored the same way.
    assert summary.yardstick.images == summary.pooled.images
    assert 0 <= summary.yardstick.uncorrected.balanced_accuracy <= 1
    assert read_summary(run_dir) == summary  # what the file says, yardstick included
    assert "random real subset" in (run_dir / "report.md").read_text()


@pytest.mark.flower
def test_refinement_rounds_retrain_and_report_each_round(tmp_path: Path) -> None:
    """Two rounds: each is pooled, trained and scored; bytes add up; the plot is drawn."""
    config = RunConfig(data_root=str(_export(tmp_path / "export.npz")), out_dir=str(tmp_path / "out"), rounds=2,
                       **TINY)
    run_dir, summary = simulate(config)
    rounds = summary.rounds
    assert summary.status == "completed" and [r.round for r in rounds] == [1, 2]
    assert all(r.sites_accepted == 2 and r.global_model.num_examples == 20 for r in rounds)
    assert rounds[0].bytes.cumulative < rounds[1].bytes.cumulative
    assert rounds[1].bytes.down > rounds[0].bytes.down  # round 2 also sent the global model to distill
    assert (run_dir / "rounds.png").is_file() and "| round |" in (run_dir / "report.md").read_text()
    assert len(list((run_dir / "bundles" / "round-2").glob("*.sealed"))) == 2


def test_a_simulated_site_records_how_its_source_data_was_resized(tmp_path: Path) -> None:
    """A 40x32 source is resized when the harness reads it; each share's export says so, and the site reading it
    carries the same preprocessing a hospital's site would sign into its manifest."""
    images = np.random.default_rng(0).integers(0, 256, (40, 40, 32), dtype=np.uint8)  # (N, H, W)
    labels = np.repeat([0, 1], 20)
    np.savez(tmp_path / "export.npz", train_images=images, train_labels=labels, test_images=images[:10],
             test_labels=labels[:10])
    config = RunConfig(data_root=str(tmp_path / "export.npz"), out_dir=str(tmp_path / "out"), **TINY)
    run_dir = tmp_path / "out" / "run-1"
    shares = write_run_shares(config, run_dir)
    expected = load_site_images("breastmnist", str(tmp_path / "export.npz")).preprocessing
    assert expected is not None and expected.source_size() == "32x40" and expected.cropped
    for share in shares:
        site = load_site_images("breastmnist", str(export_path(config, run_dir, share.site_id)))
        assert share.images.preprocessing == site.preprocessing == expected
    remove_run_shares(config, run_dir)
