"""Time to accuracy: how good each method's synthetic set is as a function of distillation wall time.

For each dataset and seed, one site holding the whole official training split distills ``--ipc``
images per class with each method's CPU preset (shared/presets.py), run to ``--stretch`` times the
preset's iterations. The set is scored at the checkpoints ``--fractions`` of that length: a fresh
ConvNet is trained on it with the fixed evaluation protocol below and tested on the official test
split. Yardsticks, trained with the same protocol: a random real subset of the same size (NOT
private) and the whole training split.

Evaluation protocol (fixed): ConvNet depth 3, width 64, instance norm, average pooling; SGD,
momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 at half the epochs; batch 256; DSA on every
image; ``--epochs`` epochs (300) on a synthetic set or subset. The whole training split gets
``--full-epochs`` (50): its epochs hold many more steps. Accuracy and AUC are MedMNIST's evaluator's.

    python scripts/benchmark_accuracy.py --data-root ../shared/data/medmnist
    python scripts/benchmark_accuracy.py --data-root DIR --datasets breastmnist --seeds 0 --json b0.json  # one piece
    python scripts/benchmark_accuracy.py --summarize b0.json b1.json ...                              # merged table
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.yardstick import score
from shared.config import RunConfig
from shared.datasets import DatasetInfo, dataset_info, reference_subset
from shared.methods import DistillMethod, NetworkSpec
from shared.models import ConvNet
from shared.training import TrainSettings, train_classifier
from site_agent.distill import distill
from site_agent.labelled import LabelledImages
from site_agent.medmnist_files import load_medmnist

EVAL_NETWORK = NetworkSpec(depth=3, width=64)
CPU = torch.device("cpu")


@dataclass
class Curve:
    """One distillation run's checkpoints: (iterations, distill seconds, accuracy, AUC)."""

    method: str
    dataset: str
    seed: int
    points: list[tuple[int, float, float, float]] = field(default_factory=list)


def train_and_score(
    images: torch.Tensor, labels: torch.Tensor, test: LabelledImages, info: DatasetInfo, epochs: int, seed: int
) -> tuple[float, float]:
    """Test accuracy and AUC of a fresh ConvNet trained on (images, labels) with the fixed protocol."""
    model = ConvNet(info.in_channels, info.num_classes, images.shape[-1], EVAL_NETWORK)
    train_classifier(model, images, labels, TrainSettings(epochs=epochs, seed=seed), CPU)
    metrics = score(model, test.images, test.labels)
    return metrics.accuracy, metrics.auc


def distill_curve(
    method: DistillMethod, train: LabelledImages, test: LabelledImages, name: str, seed: int, args: argparse.Namespace
) -> Curve:
    info = dataset_info(name)
    preset = RunConfig(method=method, ipc=args.ipc, seed=seed).distill_config()
    total = max(1, round(preset.iterations * args.stretch))
    config = preset.model_copy(update={"iterations": total})
    checkpoints = {max(1, round(total * f)) for f in args.fractions}
    snapshots: dict[int, tuple[float, torch.Tensor]] = {}
    started = time.perf_counter()
    paused = 0.0  # time spent copying snapshots, not distilling

    def observe(done: int, images: torch.Tensor) -> None:
        nonlocal paused
        if done in checkpoints:
            t0 = time.perf_counter()
            snapshots[done] = (t0 - started - paused, images.detach().cpu().clone())
            paused += time.perf_counter() - t0

    result = distill(train, info.num_classes, config, CPU, progress=False, min_real_per_class=1, observer=observe)
    if total not in snapshots:  # MTT may stop early after repeated back-offs: score what it returned
        snapshots[len(result.loss_history)] = (result.seconds, result.images)
    curve = Curve(method.value, name, seed)
    for done, (seconds, images) in sorted(snapshots.items()):
        acc, auc = train_and_score(images, result.labels, test, info, args.epochs, seed)
        curve.points.append((done, seconds, acc, auc))
        print(f"  {name} {method.value} seed {seed}: {done} it, {seconds:.0f} s -> acc {acc:.3f} auc {auc:.3f}", flush=True)
    return curve


def random_subset(train: LabelledImages, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` random real images of every class (all of a smaller class)."""
    counts = [min(per_class, int(n)) for n in np.bincount(train.labels)]
    idx = reference_subset(train.labels, counts, seed)
    return torch.from_numpy(train.images[idx]), torch.from_numpy(train.labels[idx]).long()


def mean_spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    parser.add_argument("--methods", nargs="+", default=["dc", "dm", "mtt"], choices=[m.value for m in DistillMethod])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--stretch", type=float, default=2.0, help="run to this multiple of the preset's iterations")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--full-epochs", type=int, default=50)
    parser.add_argument("--json", help="also write every point to this file")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="only merge earlier --json files and print the table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.summarize:
        report(*load_results(args.summarize), args.ipc)
        return

    curves: list[Curve] = []
    baselines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name in args.datasets:
        info = dataset_info(name)
        _, train, test = load_medmnist(name, args.data_root or None)
        for seed in args.seeds:
            images, labels = random_subset(train, args.ipc, seed)
            baselines.setdefault((name, "random real subset"), []).append(train_and_score(images, labels, test, info, args.epochs, seed))
            full = train_and_score(torch.from_numpy(train.images), torch.from_numpy(train.labels).long(), test, info, args.full_epochs, seed)
            baselines.setdefault((name, "whole training split"), []).append(full)
            print(f"  {name} seed {seed}: subset {baselines[(name, 'random real subset')][-1]}, full {full}", flush=True)
            for method in args.methods:
                curves.append(distill_curve(DistillMethod(method), train, test, name, seed, args))

    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"curves": [c.__dict__ for c in curves],
                       "baselines": [[d, k, v] for (d, k), v in baselines.items()]}, handle, indent=2)
    report(curves, baselines, args.ipc)


def load_results(paths: list[str]) -> tuple[list[Curve], dict[tuple[str, str], list[tuple[float, float]]]]:
    """Merge the ``--json`` files of several runs (e.g. one per dataset and seed)."""
    curves: list[Curve] = []
    baselines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        curves += [Curve(**c) for c in data["curves"]]
        for dataset, kind, scores in data["baselines"]:
            baselines.setdefault((dataset, kind), []).extend(tuple(x) for x in scores)
    return curves, baselines


def report(curves: list[Curve], baselines: dict[tuple[str, str], list[tuple[float, float]]], ipc: int) -> None:
    """A Markdown table: mean ± std over seeds of every yardstick and every method's checkpoints."""
    datasets = sorted({d for d, _ in baselines} | {c.dataset for c in curves})
    methods = sorted({c.method for c in curves})
    seeds = sorted({c.seed for c in curves})
    print(f"\n{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, ipc {ipc}, "
          f"seeds {seeds}; mean ± std over seeds\n")
    print("| dataset | set | iterations | distill s | test accuracy | test AUC |")
    print("|---|---|---|---|---|---|")
    for name in datasets:
        for (dataset, kind), scores in sorted(baselines.items()):
            if dataset == name:
                print(f"| {name} | {kind} | - | - | {mean_spread([a for a, _ in scores])} | {mean_spread([u for _, u in scores])} |")
        for method in methods:
            runs = [c for c in curves if c.dataset == name and c.method == method]
            if not runs:
                continue
            for i in range(min(len(c.points) for c in runs)):
                points = [c.points[i] for c in runs]
                print(f"| {name} | {method} | {points[0][0]} | {mean_spread([p[1] for p in points])} | "
                      f"{mean_spread([p[2] for p in points])} | {mean_spread([p[3] for p in points])} |")


if __name__ == "__main__":
    main()
