"""Benchmark the default simulated federation on real MedMNIST data and print a Markdown report.

For each dataset: run ``coordinator simulate`` with the default settings, then score the global model
on the full test split, next to a reference model trained the same way on a random real subset of
the same size and class mix (NOT private: it is only a yardstick for what the synthetic set is worth).

    python scripts/benchmark_federation.py --data-root ../shared/data/medmnist --datasets breastmnist retinamnist
"""

from __future__ import annotations

import argparse
import logging
import platform
import time

import numpy as np
import torch

from coordinator.evaluate import Metrics
from coordinator.simulate import simulate
from shared.config import RunConfig, resolve_device
from shared.datasets import dataset_info
from shared.metrics import EvalCounts, log_odds
from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import predict_logits, train_classifier
from site_agent.data import load_medmnist


def reference_subset(labels: np.ndarray, class_counts: list[int], seed: int) -> np.ndarray:
    """Random real indices with the same number of images per class as the pooled synthetic set."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in enumerate(class_counts) if n]
    return np.concatenate(picks)


def score(model: ConvNet, images: np.ndarray, labels: np.ndarray) -> Metrics:
    """The pooled metrics (``coordinator.evaluate``) of a model on one whole test split."""
    logits = predict_logits(model, torch.from_numpy(images), torch.device("cpu")).numpy()
    return Metrics.of(EvalCounts.from_scores(labels, log_odds(logits)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    parser.add_argument("--out-dir", default="results/benchmark")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    for name in args.datasets:
        config = RunConfig(dataset=name, data_root=args.data_root, out_dir=args.out_dir, seed=args.seed)
        started = time.perf_counter()
        run_dir, summary = simulate(config)
        wall = time.perf_counter() - started
        info = dataset_info(name)
        _, train, test = load_medmnist(name, args.data_root)
        spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=28, network=config.network())
        global_model = build_model(spec)
        global_model.load_state_dict(torch.load(run_dir / "global_model.pt", weights_only=True))
        g = score(global_model, test.images, test.labels)
        g_acc, g_auc = g.accuracy, g.auc

        counts = [summary["pooled"]["class_counts"][label] for label in info.label_names.values()]
        subset = train.subset(reference_subset(train.labels, counts, args.seed))
        reference = train_classifier(build_model(spec), torch.from_numpy(subset.images), torch.from_numpy(subset.labels),
                                     config.train_settings(), resolve_device(config.device))
        r = score(reference.cpu(), test.images, test.labels)
        r_acc, r_auc = r.accuracy, r.auc
        bytes_per_site = [s["bundle_bytes"] for s in summary["sites"] if s["status"] == "accepted"]
        rows.append((name, summary, wall, g_acc, g_auc, r_acc, r_auc, len(subset), bytes_per_site))

    print(f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; default settings (RunConfig), seed {args.seed}.\n")
    print("| dataset | sites accepted | pooled images | global acc (site-weighted) | global AUC (site-weighted) "
          "| global acc / AUC (full test split) | random real subset acc / AUC (NOT private) |")
    print("|---|---|---|---|---|---|---|")
    for name, s, _, g_acc, g_auc, r_acc, r_auc, n, _ in rows:
        glob = s["global"]
        print(f"| {name} | {s['sites_accepted']}/{s['sites_expected']} | {n} | {glob['accuracy']:.3f} | "
              f"{glob['auc'] if glob['auc'] is None else round(glob['auc'], 3)} | {g_acc:.3f} / {g_auc:.3f} | {r_acc:.3f} / {r_auc:.3f} |")
    print("\n| dataset | wall s (whole run) | distill s (all sites, wall) | per-site distill s | receive s | train s | evaluate s | bytes per site |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, wall, *_, bytes_per_site in rows:
        st = s["stage_seconds"]
        per_site = ", ".join(f"{x['distill_seconds']:.0f}" for x in s["sites"] if x["distill_seconds"] is not None)
        print(f"| {name} | {wall:.0f} | {st['distill']:.0f} | {per_site} | {st['receive']:.2f} | {st['train']:.0f} | "
              f"{st['evaluate']:.1f} | {', '.join(map(str, bytes_per_site))} |")


if __name__ == "__main__":
    main()
