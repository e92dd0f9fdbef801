"""How to train the global model on a pooled set: training choices measured on pools that federations released.

Reads the results folders of simulated runs (``scripts/benchmark_federation.py`` writes them; the
simulation keys inside open the stored bundles), pools the accepted sets again, and trains the global
model with each variant. Every variant is also trained on a random real subset with the same images
per class (NOT private), so each row compares like with like. Figures are pooled metrics on the whole
test split, uncorrected and with the plain logit adjustment to the class counts the sites released
(scale 1; ``benchmark_federation.py --rescore`` measures the tuned one), mean ± std over the runs and
training seeds given.

    python scripts/sweep_global_training.py --data-root ../shared/data/medmnist results/benchmark/*/ \
        --train-seeds 3 --variants "default (width 64, 300 epochs)" "ensemble of 3"
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from benchmark_federation import METRICS, mean_spread

from coordinator.evaluate import Metrics
from coordinator.imbalance import logit_shift, pooled_prior, real_class_prior
from coordinator.pool import pool
from coordinator.run_state import stored_config
from harness.simulate import reopened_bundles
from shared.datasets import reference_subset
from shared.methods import NetworkSpec
from shared.metrics import EvalCounts, log_odds
from shared.models import build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, predict_logits, train_classifier
from site_agent.data import read_local_data

CPU = torch.device("cpu")

# name -> (network, settings change, ensemble size)
VARIANTS = {
    "default (width 64, 300 epochs)": (None, {}, 1),
    "1000 epochs": (None, {"epochs": 1000}, 1),
    "width 128": (NetworkSpec(depth=3, width=128), {}, 1),
    "ensemble of 3": (None, {}, 3),
    "no DSA": (None, {"augment": False}, 1),
}


def ensemble_logits(images: torch.Tensor, labels: torch.Tensor, test_images: np.ndarray, spec: ModelSpec,
                    settings: TrainSettings, members: int) -> np.ndarray:
    """The mean test logits of ``members`` ConvNets trained with different seeds."""
    logits = [predict_logits(train_classifier(build_model(spec), images, labels,
                                              replace(settings, seed=settings.seed + member), CPU),
                             torch.from_numpy(test_images), CPU).numpy() for member in range(members)]
    return np.mean(logits, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--data-root", default="", help="used where a run's own data root is empty")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-seeds", type=int, default=1,
                        help="train each variant this many times per run (the spread of training alone)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for run_dir in map(Path, args.run_dirs):
        config = stored_config(run_dir)
        bundles = reopened_bundles(run_dir)
        pooled = pool(bundles)
        local = read_local_data(config.data_root or args.data_root, config.dataset)
        train, test, info = local.splits["train"], local.splits["test"], local.info
        subset = train.subset(reference_subset(train.labels, pooled.class_counts(info.num_classes), config.seed))
        real_prior = real_class_prior(bundles, info.num_classes)
        shift = 0.0 if real_prior is None else logit_shift(real_prior, pooled_prior(pooled.labels, info.num_classes))
        sets = {"pooled synthetic": (pooled.images, pooled.labels),
                "random real subset": (torch.from_numpy(subset.images), torch.from_numpy(subset.labels))}
        for name in args.variants:
            network, change, members = VARIANTS[name]
            spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=28,
                             network=network or config.network())
            for repeat in range(args.train_seeds):
                settings = replace(config.train_settings(), seed=config.seed + 10 * repeat, **change)
                for kind, (x, y) in sets.items():
                    logits = ensemble_logits(x, y, test.images, spec, settings, members)
                    for corrected, z in (("uncorrected", logits), ("logit-adjust", logits + shift)):
                        metrics = Metrics.of(EvalCounts.from_scores(test.labels, log_odds(z)))
                        figures = {m: getattr(metrics, m) for m in METRICS}
                        results.setdefault((config.dataset, name, f"{kind}, {corrected}"), []).append(figures)
                        print(f"  {run_dir.name} {name} seed {settings.seed} {kind} {corrected}: {figures}", flush=True)
    print("\n| dataset | training | set | runs | accuracy | balanced accuracy | AUC |\n|---|---|---|---|---|---|---|")
    for (dataset, name, kind), rows in sorted(results.items()):
        cells = " | ".join(mean_spread([r[m] for r in rows]) for m in METRICS)
        print(f"| {dataset} | {name} | {kind} | {len(rows)} | {cells} |")


if __name__ == "__main__":
    main()
