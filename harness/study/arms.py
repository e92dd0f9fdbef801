"""Running one arm of the study and reducing it to an ``ArmRecord``: figures, bytes per site, seconds, shares.

Figures are always the pooled metrics (``shared.metrics``): counts summed over the sites' test shares,
which together are the whole test split. Bytes are what a site received plus what it sent, mean over
sites, counted on the wire objects (``traffic``); for the arms that ship real images (the subset and
centralised training) they are the images' uint8 size. Everything here runs where one machine holds
every site's data: it is a study harness, not part of a deployment.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from coordinator.evaluate import Metrics
from harness.fedavg_site import FedAvgSites
from harness.simulate import SHARES_FILE, backend_config, reopened_pool, simulate
from harness.sites import Share, split_shares, write_export
from harness.study.fedavg import FedAvgPlan, run_fedavg
from harness.study.plan import Arm, StudyConfig
from harness.study.traffic import bytes_per_round, traffic_mod
from harness.yardstick import FIGURES, figures
from shared.config import RunConfig, resolve_device, simulated_site_id
from shared.datasets import IMAGE_SIZE, DatasetInfo, reference_subset
from shared.methods import NetworkSpec
from shared.metrics import EvalCounts
from shared.models import build_model, resnet18
from shared.schemas import ModelSpec
from shared.training import TrainSettings, model_counts, train_classifier
from site_agent.data import LabelledImages, SiteImages, read_local_data

TRAFFIC = "traffic"


class ArmRecord(BaseModel):
    """The outcome of one arm for one seed, as the study's JSON keeps it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: str  # pooled, subset, fedavg, local, central
    seed: int
    method: str | None = None
    ipc: int | None = None
    private: bool  # False: the arm ships real images (a reference, not something a federation may do)
    figures: dict[str, float | None]  # the global model's, with the class-imbalance correction where one applies
    uncorrected: dict[str, float | None] | None = None
    curve: list[dict[str, Any]] = []  # per round: round, cumulative bytes per site, figures
    bytes_per_site: float
    seconds: dict[str, float]
    resnet18: dict[str, float | None] | None = None  # the same training set in a ResNet-18 (uncorrected)
    images: int | None = None  # training images of the global model (pooled set or subset)
    shares: dict[str, str]  # site id -> digest of its share's index sets
    per_site: list[dict[str, Any]] = []
    majority_rate: float | None = None  # accuracy of always predicting the most frequent class (central arm)


def run_arm(config: StudyConfig, arm: Arm, folder: Path) -> list[ArmRecord]:
    """Run ``arm`` in ``folder/<arm key>`` (started afresh) and return its records (a pooled arm gives two)."""
    run_dir = folder / arm.key
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an arm that stopped half way starts again
    run_dir.mkdir(parents=True)
    runners = {"pooled": pooled_arm, "fedavg": fedavg_arm, "local": local_arm, "central": central_arm}
    return runners[arm.kind](config, arm, run_dir)


# --- the arms -------------------------------------------------------------------------------------------


def pooled_arm(config: StudyConfig, arm: Arm, run_dir: Path) -> list[ArmRecord]:
    """``coordinator simulate`` itself, and the random real subset of its pooled set's size it scores beside it."""
    assert arm.method is not None and arm.ipc is not None
    run = config.run_config(arm.seed, arm.method, arm.ipc, str(run_dir))
    started = time.perf_counter()
    _, summary = simulate(run, client_mods=[traffic_mod(run_dir / TRAFFIC)])
    wall = time.perf_counter() - started
    traffic = bytes_per_round(run_dir / TRAFFIC)
    curve = [{"round": r.round, "bytes_per_site": t["cumulative"], **figures(r.global_model)}
             for r, t in zip(summary.rounds, traffic, strict=True)]
    distill = [s.distill_seconds for s in summary.sites if s.distill_seconds is not None]
    seconds = {"wall": wall, "distill, slowest site": max(distill, default=0.0), **summary.stage_seconds}
    shares = json.loads((run_dir / SHARES_FILE).read_text())
    yardstick = summary.yardstick
    assert yardstick is not None, "simulate scores the yardstick of every completed run"
    pooled = reopened_pool(run_dir)
    common = {"seed": arm.seed, "method": arm.method.value, "ipc": arm.ipc, "shares": shares}
    data = _whole_splits(config)
    subset = data.train.subset(reference_subset(data.train.labels, pooled.class_counts(data.info.num_classes),
                                                arm.seed))
    pooled_record = ArmRecord(
        key=arm.key, kind="pooled", private=True, figures={k: curve[-1][k] for k in FIGURES},
        uncorrected=figures(summary.uncorrected or summary.rounds[-1].global_model),  # the same model when uncorrected
        curve=curve, bytes_per_site=traffic[-1]["cumulative"], seconds=seconds, images=len(pooled.labels),
        resnet18=_cross_arch(config, pooled.images, pooled.labels, data, arm.seed), **common,
    )
    subset_record = ArmRecord(
        key=arm.key.replace("pooled", "subset", 1), kind="subset", private=False,
        figures=figures(yardstick.corrected), uncorrected=figures(yardstick.uncorrected),
        bytes_per_site=_image_bytes(subset) / config.sites, seconds={}, images=len(subset),
        resnet18=_cross_arch(config, torch.from_numpy(subset.images), torch.from_numpy(subset.labels), data, arm.seed),
        **common,
    )
    return [pooled_record, subset_record]


def fedavg_arm(config: StudyConfig, arm: Arm, run_dir: Path) -> list[ArmRecord]:
    """Flower's FedAvg on the same sites, to its plateau."""
    shares = _shares(config, arm.seed)
    exports = [str(write_export(share.images, run_dir / ".site-data" / f"{share.site_id}.npz")) for share in shares]
    sites = FedAvgSites(dataset=config.dataset, exports=exports, seed=arm.seed,
                        model=_spec(shares[0].images.info, config), device=config.device)
    plan = FedAvgPlan(sites=config.sites, local_epochs=config.fedavg_local_epochs, max_rounds=config.fedavg_max_rounds,
                      patience=config.fedavg_patience)
    started = time.perf_counter()
    try:
        history = run_fedavg(sites, plan, run_dir, backend_config(RunConfig(sites=config.sites, device=config.device)))
    finally:
        shutil.rmtree(run_dir / ".site-data")  # the sites' copies of their images
    wall = time.perf_counter() - started
    traffic = bytes_per_round(run_dir / TRAFFIC)
    curve = [{"round": h["round"], "bytes_per_site": t["cumulative"], "received": t["received"], "sent": t["sent"],
              "model_bytes_sent": h["model_bytes_sent"], "model_bytes_evaluated": h["model_bytes_evaluated"],
              **figures(h)} for h, t in zip(history, traffic, strict=True)]
    return [ArmRecord(key=arm.key, kind="fedavg", seed=arm.seed, private=True, figures=figures(history[-1]),
                      curve=curve, bytes_per_site=traffic[-1]["cumulative"],
                      seconds={"wall": wall, "rounds": len(history)}, shares=_share_digests(shares))]


def local_arm(config: StudyConfig, arm: Arm, run_dir: Path) -> list[ArmRecord]:
    """Each site trains on its own share alone and is scored on its own test share; nothing moves."""
    shares = _shares(config, arm.seed)
    sites = [share.images for share in shares]
    spec = _spec(sites[0].info, config)
    total = EvalCounts.empty(spec.num_classes)
    per_site = []
    started = time.perf_counter()
    for index, site in enumerate(sites):
        site_id = simulated_site_id(index)
        model = _train(build_model(spec), site.train, config.local_epochs, config, arm.seed * 100 + index)
        counts = _counts(model, site.test, spec.num_classes)
        total = total + counts
        per_site.append({"site": site_id, "train_images": len(site.train), "test_images": len(site.test),
                         **figures(Metrics.of(counts))})
    return [ArmRecord(key=arm.key, kind="local", seed=arm.seed, private=True, figures=figures(Metrics.of(total)),
                      bytes_per_site=0.0, seconds={"wall": time.perf_counter() - started},
                      shares=_share_digests(shares), per_site=per_site)]


def central_arm(config: StudyConfig, arm: Arm, run_dir: Path) -> list[ArmRecord]:
    """Every site's training share in one place (the ceiling): what shipping all the images would buy."""
    shares = _shares(config, arm.seed)
    sites = [share.images for share in shares]
    train = LabelledImages(np.concatenate([s.train.images for s in sites]), np.concatenate([s.train.labels for s in sites]))
    spec = _spec(sites[0].info, config)
    started = time.perf_counter()
    model = _train(build_model(spec), train, config.central_epochs, config, arm.seed)
    total = EvalCounts.empty(spec.num_classes)
    for site in sites:
        total = total + _counts(model, site.test, spec.num_classes)
    metrics = Metrics.of(total)
    return [ArmRecord(key=arm.key, kind="central", seed=arm.seed, private=False, figures=figures(metrics),
                      bytes_per_site=_image_bytes(train) / len(sites), seconds={"wall": time.perf_counter() - started},
                      images=len(train), majority_rate=metrics.majority_rate, shares=_share_digests(shares))]


# --- shared pieces ---------------------------------------------------------------------------------------


def _spec(info: DatasetInfo, config: StudyConfig) -> ModelSpec:
    return ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=IMAGE_SIZE,
                     network=NetworkSpec(depth=3, width=config.net_width))


def _whole_splits(config: StudyConfig) -> SiteImages:
    local = read_local_data(config.data_root, config.dataset)
    return SiteImages(local.info, local.splits["train"], local.splits["test"])


def _shares(config: StudyConfig, seed: int) -> list[Share]:
    """Each simulated site's share, split exactly as the pooled arm's simulation splits it."""
    return split_shares(config.dataset, config.data_root, config.sites, config.partition, config.alpha, seed)


def _share_digests(shares: list[Share]) -> dict[str, str]:
    return {share.site_id: share.sha256 for share in shares}


def _train(model: torch.nn.Module, data: LabelledImages, epochs: int, config: StudyConfig, seed: int) -> torch.nn.Module:
    settings = TrainSettings(epochs=epochs, seed=seed)
    train_classifier(model, torch.from_numpy(data.images), torch.from_numpy(data.labels), settings,
                     resolve_device(config.device))
    return model.cpu().eval()


def _counts(model: torch.nn.Module, test: LabelledImages, num_classes: int) -> EvalCounts:
    return model_counts(model, test.images, test.labels, num_classes, torch.device("cpu"))


def _cross_arch(config: StudyConfig, images: torch.Tensor, labels: torch.Tensor, data: SiteImages,
                seed: int) -> dict[str, float | None] | None:
    """Uncorrected figures of a ResNet-18 trained on the set, on the whole test split (None when turned off)."""
    if not config.cross_arch_epochs:
        return None
    model = resnet18(data.info.in_channels, data.info.num_classes)
    train_classifier(model, images, labels, TrainSettings(epochs=config.cross_arch_epochs, seed=seed),
                     resolve_device(config.device))
    return figures(Metrics.of(_counts(model.cpu().eval(), data.test, data.info.num_classes)))


def _image_bytes(data: LabelledImages) -> float:
    """What shipping these images would move, at 8 bits per pixel."""
    return float(np.prod(data.images.shape))


def dump(records: list[ArmRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.model_dump_json()) for r in records]
