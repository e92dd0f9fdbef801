"""`coordinator study`: the arms share one partition, FedAvg's bytes are its serialized records, and a tiny study
runs end to end, reports, and resumes without running an arm twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from harness.partition import partition, share_digest
from harness.study import runner
from harness.study.arms import ArmRecord
from harness.study.fedavg import plateaued
from harness.study.plan import StudyConfig, arms
from harness.study.report import command_line, write_report
from harness.study.traffic import bytes_per_round, content_bytes
from shared.errors import ConfigError
from shared.models import ConvNet
from tests.conftest import blobs


def _record(key: str, seed: int, shares: dict[str, str]) -> ArmRecord:
    return ArmRecord(key=key, kind="local", seed=seed, private=True, figures={"accuracy": 0.5}, bytes_per_site=0,
                     seconds={}, shares=shares)


def test_arms_that_trained_on_different_shares_stop_the_study() -> None:
    """A digest that differs between two arms of one seed is named, not averaged over."""
    same = {"site-0": "a", "site-1": "b"}
    runner.check_shares([_record("local-seed0", 0, same), _record("fedavg-seed0", 0, same),
                         _record("local-seed1", 1, {"site-0": "c", "site-1": "d"})])
    with pytest.raises(runner.PartitionMismatch, match="local-seed0 and fedavg-seed0.*site-1"):
        runner.check_shares([_record("local-seed0", 0, same), _record("fedavg-seed0", 0, {**same, "site-1": "x"})])


def test_fedavg_stops_at_a_plateau_not_before() -> None:
    assert not plateaued([0.5, 0.6, 0.7], patience=2, min_delta=0.005)
    assert not plateaued([0.5, 0.6], patience=2, min_delta=0.005)  # too few rounds to tell
    assert plateaued([0.5, 0.7, 0.702, 0.69], patience=2, min_delta=0.005)
    assert not plateaued([0.5, 0.7, 0.69, 0.71], patience=2, min_delta=0.005)


def test_content_bytes_is_the_serialized_record_tree() -> None:
    """The model's weights dominate a message: its size is the float32 bytes plus a small header per object."""
    model = ConvNet(1, 2, 28)
    weights = sum(p.numel() * 4 for p in model.state_dict().values())
    size = content_bytes(RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({"round": 1})}))
    assert weights < size < weights + 400 * len(model.state_dict())


def test_bytes_are_grouped_into_rounds_by_the_message_that_starts_one(tmp_path: Path) -> None:
    entries = [("train", 100, 90), ("evaluate", 100, 10), ("train", 100, 90), ("evaluate", 100, 10)]
    for site in (0, 1):
        (tmp_path / f"{site}.jsonl").write_text("".join(
            json.dumps({"site": site, "type": t, "received": r, "sent": s}) + "\n" for t, r, s in entries))
    rounds = bytes_per_round(tmp_path)
    assert [(r["round"], r["received"], r["sent"], r["cumulative"]) for r in rounds] == [(1, 200, 100, 300),
                                                                                        (2, 200, 100, 600)]


def test_a_resumed_study_may_grow_but_not_change(tmp_path: Path) -> None:
    config = StudyConfig(out_dir=str(tmp_path), seeds=[0])
    folder = runner.study_folder(config)
    runner.save_records(folder, config, [_record("local-seed0", 0, {})])
    assert [r.key for r in runner.load_records(folder, config.model_copy(update={"seeds": [0, 1]}))] == ["local-seed0"]
    with pytest.raises(ConfigError, match="other settings .*alpha"):
        runner.load_records(folder, config.model_copy(update={"alpha": 1.0}))


def test_the_report_names_the_command_that_reproduces_it() -> None:
    config = StudyConfig(dataset="retinamnist", seeds=[0, 1], ipcs=[10], rounds=1)
    line = command_line(config)
    assert line.startswith("coordinator study --dataset retinamnist")
    assert "--seed 0 --seed 1" in line and "--ipc 10" in line and "--rounds 1" in line and "--alpha" not in line
    assert [a.key for a in arms(config)][:3] == ["central-seed0", "local-seed0", "fedavg-seed0"]


def _export(folder: Path) -> Path:
    """A tiny hospital export (.npz, MedMNIST keys): two generated classes, train and test drawn alike."""
    data = blobs(per_class=40, size=28, seed=0)
    images = np.round((data.images[:, 0] + 1) * 127.5).astype(np.uint8)
    labels = data.labels.reshape(-1, 1)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:60], order[60:]
    path = folder / "export.npz"
    np.savez(path, train_images=images[train], train_labels=labels[train], test_images=images[test],
             test_labels=labels[test])
    return path


@pytest.mark.flower
def test_a_tiny_study_runs_every_arm_on_one_partition_and_resumes(tmp_path: Path, monkeypatch) -> None:
    export = _export(tmp_path)
    config = StudyConfig(dataset="breastmnist", data_root=str(export), sites=2, partition="iid", seeds=[0],
                         methods=["dm"], ipcs=[1], rounds=2, iterations=2, train_epochs=2, fedavg_local_epochs=1,
                         fedavg_max_rounds=3, fedavg_patience=1, local_epochs=1, central_epochs=1, cross_arch_epochs=1,
                         net_width=16, out_dir=str(tmp_path / "out"))
    _, records = runner.run_study(config, progress=False)
    by_kind = {r.kind: r for r in records}
    assert set(by_kind) == {"central", "local", "fedavg", "pooled", "subset"}

    # Every arm, the pooled sets' Flower sites and FedAvg's included, trained on the partition the study defines.
    with np.load(export) as raw:
        parts = partition(raw["train_labels"].ravel(), raw["test_labels"].ravel(), 2, config.partition, config.alpha, 0)
    expected = {f"site-{i}": share_digest(train, test) for i, (train, test) in enumerate(parts)}
    assert all(r.shares == expected for r in records)

    # FedAvg's bytes: per round, each site received the train and the evaluate message, i.e. the two serialized
    # ArrayRecords of the global model plus their small configs, and sent back at least its trained model.
    fedavg = by_kind["fedavg"]
    assert 1 <= len(fedavg.curve) <= 3
    for point in fedavg.curve:
        models = point["model_bytes_sent"] + point["model_bytes_evaluated"]
        assert 0 < point["received"] - models < 2048
        assert point["sent"] > point["model_bytes_evaluated"] * 0.99
    assert fedavg.bytes_per_site == pytest.approx(sum(p["received"] + p["sent"] for p in fedavg.curve))

    # The pooled arm: both rounds with their bytes, the subset of its size beside it, a ResNet-18 on each.
    pooled, subset = by_kind["pooled"], by_kind["subset"]
    assert [p["round"] for p in pooled.curve] == [1, 2]
    assert 0 < pooled.curve[0]["bytes_per_site"] < pooled.curve[1]["bytes_per_site"] == pooled.bytes_per_site
    assert subset.images == pooled.images and not subset.private and pooled.private
    assert pooled.resnet18 is not None and subset.resnet18 is not None
    assert by_kind["local"].bytes_per_site == 0 and len(by_kind["local"].per_site) == 2

    report = write_report(config, records, tmp_path / "docs")
    text = report.read_text()
    for phrase in ("FedAvg (Flower's strategy)", "local only", "NOT private", "round 2", "ResNet-18", "Pearson r",
                   "5 of 5"):
        assert phrase in text
    for png in ("study-breastmnist-bytes.png", "study-breastmnist-correlation.png"):
        assert (tmp_path / "docs" / png).read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "docs" / "study-breastmnist.json").read_text())["records"]

    # Run again: every arm is done, none runs twice.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm ran again")

    monkeypatch.setattr(runner, "run_arm", refuse)
    _, again = runner.run_study(config, progress=False)
    assert [r.key for r in again] == [r.key for r in records]
    assert torch.equal(torch.tensor([r.seed for r in again]), torch.tensor([0] * len(records)))
