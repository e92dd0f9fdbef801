"""MTT's image and learning-rate step sizes on a MedMNIST dataset: how many iterations survive, and what the set is worth.

    python scripts/sweep_mtt_rates.py --data-root ../shared/data/medmnist --dataset breastmnist --iterations 40
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from benchmark_accuracy import train_and_score

from shared.config import RunConfig
from shared.methods import DistillMethod
from site_agent.distill import distill
from site_agent.medmnist_files import load_medmnist

RATES = ((1000.0, 1e-5), (100.0, 1e-6), (100.0, 1e-7), (10.0, 1e-7))  # (lr_img, lr_lr); the first is the paper's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="")
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=100, help="training epochs of the scoring ConvNet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    info, train, test = load_medmnist(args.dataset, args.data_root or None)
    print("| lr_img | lr_lr | accepted iterations | loss (first -> last 5) | max pixel | test acc / AUC | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:  # the experts are trained once and shared by every row
        for lr_img, lr_lr in RATES:
            preset = RunConfig(method=DistillMethod.MTT, iterations=args.iterations).distill_config()
            config = preset.model_copy(update={"lr_img": lr_img, "lr_lr": lr_lr})
            started = time.perf_counter()
            result = distill(train, info.num_classes, config, torch.device("cpu"), progress=False,
                             min_real_per_class=1, expert_cache_dir=Path(cache))
            seconds = time.perf_counter() - started
            history = result.loss_history
            acc, auc = train_and_score(result.images, result.labels, test, info, args.epochs, 0)
            print(f"| {lr_img:g} | {lr_lr:g} | {len(history)} of {args.iterations} | {history[0]:.1f} -> "
                  f"{sum(history[-5:]) / len(history[-5:]):.2f} | {result.images.abs().max():.1f} | "
                  f"{acc:.3f} / {auc:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
