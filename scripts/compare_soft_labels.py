"""Soft labels or classes: the same pooled sets trained both ways, with the teachers the sites would train.

Reads the results folders of simulated runs (``scripts/benchmark_federation.py`` writes them; the simulation
keys inside open the stored bundles), splits the data again as the run split it, and for every accepted set
trains the teacher its site would train (``site_agent.distill.teacher``: the site's training images of the
classes it distilled, the run's network, ``--teacher-epochs``) and labels the set with it. The global model is
then trained as the run trains it (class-balanced, DSA, the run's epochs and seed) on the pool's classes, on
the soft labels, and on a mix of both (``--mix``), and scored on the whole test split: balanced accuracy, macro
AUC and each class's recall. The teacher sees no test image.

    python scripts/compare_soft_labels.py /tmp/bench/breast/*/ --json soft-breast.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coordinator.pool import pool
from coordinator.run_state import stored_config
from harness.simulate import reopened_bundles
from harness.sites import run_shares
from harness.source import read_source
from harness.yardstick import figures, score
from shared.methods import SoftLabelSpec
from shared.models import build_model
from shared.pooled_training import balancing_weights
from shared.schemas import ModelSpec
from shared.training import predict_logits, train_classifier
from site_agent.distill.engine import site_seed
from site_agent.distill.teacher import soft_labels, train_teacher

CPU = torch.device("cpu")


def compare(run_dir: Path, spec: SoftLabelSpec, mixes: list[float]) -> dict[str, Any]:
    """One run's pool trained on its classes, its soft labels and each mix; figures and recall of each."""
    config = stored_config(run_dir)
    bundles = sorted(reopened_bundles(run_dir), key=lambda b: b.manifest.site_id)  # the pool's order
    pooled = pool(bundles)
    shares = {share.site_id: share.images.train for share in run_shares(config)}
    local = read_source(config.dataset, config.data_root)
    test, info = local.splits["test"], local.info
    k = info.num_classes
    model_spec = ModelSpec(in_channels=info.in_channels, num_classes=k, image_size=28, network=config.network())
    images, labels = pooled.images, pooled.labels
    soft = []
    for bundle in bundles:  # each site's teacher, on its own training images of the classes it distilled
        train = shares[bundle.manifest.site_id]
        classes = sorted(set(bundle.labels.tolist()))
        real_by_class = {c: torch.from_numpy(train.images[train.labels == c]) for c in classes}
        seed = site_seed(config.seed, bundle.manifest.site_id)  # the seed the site's distillation drew from
        teacher = train_teacher(real_by_class, k, config.network(), spec, seed, CPU)
        soft.append(soft_labels(teacher, torch.from_numpy(bundle.images), classes, spec.temperature, CPU))
    soft_targets = torch.cat(soft)
    one_hot = torch.nn.functional.one_hot(labels, k).float()
    targets = {"classes": labels, "soft labels": soft_targets}
    targets |= {f"mix {m:g}": m * soft_targets + (1 - m) * one_hot for m in mixes}
    weights = balancing_weights(labels, k) if config.train_balance else None
    row: dict[str, Any] = {"run_dir": str(run_dir), "dataset": config.dataset, "seed": config.seed,
                           "teacher_epochs": spec.teacher_epochs, "images": len(labels)}
    for name, target in targets.items():
        torch.manual_seed(config.seed)
        model = train_classifier(build_model(model_spec), images, target, config.train_settings(), CPU, weights)
        predicted = predict_logits(model, torch.from_numpy(test.images), CPU).argmax(1).numpy()
        recall = [float((predicted[test.labels == c] == c).mean()) if (test.labels == c).any() else None
                  for c in range(k)]
        row[name] = {**figures(score(model, test.images, test.labels)), "recall": recall}
        print(f"{run_dir.name} {name}: balanced accuracy {row[name]['balanced_accuracy']:.3f}, "
              f"AUC {row[name]['auc']:.3f}, recall {np.round([r or 0 for r in recall], 2).tolist()}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="results folders of simulated runs")
    parser.add_argument("--teacher-epochs", type=int, default=SoftLabelSpec().teacher_epochs)
    parser.add_argument("--temperature", type=float, default=SoftLabelSpec().temperature)
    parser.add_argument("--mix", nargs="*", type=float, default=[0.5], help="weights of the soft labels in a mix")
    parser.add_argument("--json", type=Path, help="append every run's row to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = SoftLabelSpec(teacher_epochs=args.teacher_epochs, temperature=args.temperature)
    for run_dir in args.runs:
        row = compare(run_dir, spec, args.mix)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
