"""What the pooled global model is worth: simulated federations against a random real subset of the same size.

For each dataset, method and seed: run ``coordinator simulate`` (the product: 3 Dirichlet(0.5) sites by
default, each method's CPU preset) and read the global model's pooled metrics from its summary, with
and without the class-imbalance correction. Next to it, with the same training settings and the same
pooled metrics on the same (whole) test split:

- a random real subset with the same number of images per class as the pooled synthetic set, drawn
  from the union of the sites' training shares (NOT private: ``harness.yardstick``, which the
  simulation's own report shows too), trained the same way, with and without the same correction;
- the whole training split (the ceiling), trained for ``--full-epochs``;
- always predicting the majority class.

    python scripts/benchmark_federation.py --data-root ../shared/data/medmnist --datasets breastmnist \\
        --methods dm --seeds 0 1 2 --json b.json
    python scripts/benchmark_federation.py --datasets \\
        pneumoniamnist=../shared/data/medmnist/unverified/pneumoniamnist_train_unordered_unverified.npz
    python scripts/benchmark_federation.py --datasets breastmnist --methods dpdm dm idm --epsilon 1 4 10 \\
        --seeds 0 1 2 --json dp.json    # one dpdm row per epsilon, beside the non-private methods
    python scripts/benchmark_federation.py --datasets retinamnist --methods idm --set match=mmd --json r.json
    python scripts/benchmark_federation.py --summarize b.json r.json p.json    # merged table of earlier pieces
    python scripts/benchmark_federation.py --summarize b.json r.json p.json --one-table    # a line per method
    python scripts/benchmark_federation.py --rescore b.json --json b2.json    # same pools, today's global training
    python scripts/benchmark_federation.py --standard-eval b.json --json b3.json    # same pools, the papers' ConvNet-3

``--rescore`` reopens the pools that earlier rows' runs stored (their results folders must still be
there) and trains and corrects the global model and the subset again with the current defaults (and
``--set``); the tuning counts are computed on the whole training split, which is what the sites' summed
counts are. For a run of several rounds the last round's pool is retrained; the sets of its later
rounds were refined against the global models of that run.

``--standard-eval`` scores earlier rows' stored pools the way the dataset-distillation papers do, so that a lead
cannot belong to our global-training recipe alone: a fresh ConvNet-3 (width 128, instance norm), SGD lr 0.01
momentum 0.9 weight decay 5e-4, 300 epochs, no augmentation, seeds 0-2, on the pool (with its soft labels, as the
sets carry them) and on the run's same-size random real subset (classes), uncorrected.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from coordinator.evaluate import Metrics
from coordinator.imbalance import real_class_prior
from coordinator.pool import pool
from coordinator.run_options import parse_settings
from coordinator.run_state import stored_config
from coordinator.train import train_corrected
from harness.simulate import reopened_bundles, simulate
from harness.source import read_source
from harness.study.report import mean_spread
from harness.yardstick import random_subset_yardstick, score
from shared.config import RunConfig
from shared.datasets import dataset_info, reference_subset
from shared.methods import DistillMethod, NetworkSpec
from shared.models import build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, train_classifier
from site_agent.data import read_local_data

CPU = torch.device("cpu")
METRICS = ("accuracy", "balanced_accuracy", "auc")
_WHOLE_TRAIN: dict[tuple[str, int], dict[str, float]] = {}  # the ceiling, once per dataset and seed


def _figures(metrics: Metrics | BaseModel | dict[str, Any]) -> dict[str, float]:
    values = asdict(metrics) if isinstance(metrics, Metrics) else (
        metrics.model_dump() if isinstance(metrics, BaseModel) else metrics)
    return {k: float("nan") if values[k] is None else float(values[k]) for k in METRICS}


def run_one(name: str, path: str, method: DistillMethod, seed: int, args: argparse.Namespace,
            epsilon: float | None = None) -> dict[str, Any]:
    """One federation and its yardsticks; every figure is a pooled metric on the whole test split.

    ``epsilon`` (dpdm only) is each site's privacy target; the row's method names it.
    """
    private = {"epsilon": epsilon, "delta": args.delta} if epsilon is not None else {}
    overrides = parse_settings(args.set)  # read as `coordinator simulate --set` reads them
    config = RunConfig.from_flower({"dataset": name, "data-root": path, "method": method.value, "seed": seed,
                                    "sites": args.sites, "alpha": args.alpha, "ipc": args.ipc, "rounds": args.rounds,
                                    "out-dir": args.out_dir, "privacy-report": args.privacy_report, **private,
                                    **overrides})
    started = time.perf_counter()
    run_dir, summary = simulate(config)
    wall = time.perf_counter() - started
    local = read_local_data(path, name)
    train, test, info = local.splits["train"], local.splits["test"], local.info
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=28,
                     network=config.network())
    yardstick, glob = summary.yardstick, summary.global_model
    label = method.value if args.rounds == 1 else f"{method.value}, {args.rounds} rounds"
    if epsilon is not None:
        label = f"{label} (ε={epsilon:g}, δ={args.delta:g})"
    if overrides:
        label = f"{label} ({', '.join(args.set)})"
    row = {
        "dataset": name, "method": label, "epsilon": epsilon,
        "seed": seed, "wall_seconds": wall, "pooled_images": yardstick.images,
        "site_distill_seconds": [s.distill_seconds for s in summary.sites if s.distill_seconds is not None],
        "sites_accepted": summary.sites_accepted, "test_images": glob.num_examples,
        "majority_rate": glob.majority_rate, "correction": glob.correction,
        "global": _figures(glob), "global_uncorrected": _figures(summary.uncorrected or glob),
        "subset": yardstick.corrected.model_dump(), "subset_uncorrected": yardstick.uncorrected.model_dump(),
        "run_dir": str(run_dir),
    }
    if glob.num_examples != len(test.labels):  # a site that released nothing scored nothing either
        row["test_split_images"] = len(test.labels)
        print(f"  WARNING: the pooled model was scored on {glob.num_examples} of the {len(test.labels)} test images "
              "(the sites that took part); the subset on all of them. `--rescore` scores the stored pool on the "
              "whole test split.", flush=True)
    if args.rounds > 1:  # every round's corrected global model, so one run gives rounds 1 and R
        row["rounds"] = [{"round": r.round, "megabytes": r.bytes.cumulative / 1e6, **_figures(r.global_model)}
                         for r in summary.rounds]
    if args.full_epochs and seed in args.seeds[: args.full_seeds]:
        if (name, seed) not in _WHOLE_TRAIN:
            full = train_classifier(build_model(spec), torch.from_numpy(train.images), torch.from_numpy(train.labels),
                                    replace(config.train_settings(), epochs=args.full_epochs), CPU).cpu()
            _WHOLE_TRAIN[name, seed] = _figures(score(full, test.images, test.labels))
        row["whole_train"] = _WHOLE_TRAIN[name, seed]
    print(f"  {name} {label} seed {seed}: global {row['global']} (uncorrected {row['global_uncorrected']}); "
          f"subset {row['subset']} (uncorrected {row['subset_uncorrected']}); {wall:.0f} s", flush=True)
    return row


def rescore_one(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """An earlier row with its global model and subset trained and corrected again on the run's stored pool."""
    run_dir = Path(row["run_dir"])
    stored = stored_config(run_dir).to_flower()
    config = RunConfig.from_flower({**stored, "imbalance": RunConfig().imbalance.value, **parse_settings(args.set)})
    bundles = reopened_bundles(run_dir)
    pooled = pool(bundles)
    local = read_local_data(config.data_root, config.dataset)
    train, test, info = local.splits["train"], local.splits["test"], local.info
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=28,
                     network=config.network())
    models = train_corrected(pooled, spec, config.train_settings(), CPU, config.imbalance,
                             real_class_prior(bundles, info.num_classes))
    models = models.tuned_on(train.images, train.labels, CPU)
    yardstick = random_subset_yardstick(config, pooled.class_counts(info.num_classes))
    rescored = {**row, "correction": models.correction.value, "scale": models.scale,
                "global": _figures(score(models.model, test.images, test.labels)),
                "global_uncorrected": _figures(score(models.uncorrected, test.images, test.labels)),
                "subset": _figures(yardstick.corrected), "subset_uncorrected": _figures(yardstick.uncorrected),
                "subset_scale": yardstick.scale, "rescored": True, "test_images": len(test.labels)}
    print(f"  {row['dataset']} {row['method']} seed {row['seed']}: scale {models.scale:g}, global {rescored['global']}; "
          f"subset {rescored['subset']} (scale {yardstick.scale:g})", flush=True)
    return rescored


STANDARD_NETWORK = NetworkSpec(depth=3, width=128)
STANDARD_TRAINING = TrainSettings(epochs=300, lr=0.01, batch_size=256, momentum=0.9, weight_decay=5e-4, augment=False)


def standard_one(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """An earlier row with its stored pool and its same-size random real subset scored by the papers' evaluation."""
    run_dir = Path(row["run_dir"])
    config = stored_config(run_dir)
    pooled = pool(reopened_bundles(run_dir))
    local = read_source(config.dataset, config.data_root)
    train, test, info = local.splits["train"], local.splits["test"], local.info
    subset = train.subset(reference_subset(train.labels, pooled.class_counts(info.num_classes), config.seed))
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=28,
                     network=STANDARD_NETWORK)
    figures: dict[str, list[dict[str, float]]] = {"pooled": [], "subset": []}
    for seed in args.standard_seeds:
        settings = replace(STANDARD_TRAINING, seed=seed)
        for key, images, targets in (("pooled", pooled.images, pooled.labels if pooled.targets is None else pooled.targets),
                                     ("subset", torch.from_numpy(subset.images), torch.from_numpy(subset.labels))):
            torch.manual_seed(seed)
            model = train_classifier(build_model(spec), images, targets, settings, CPU).cpu()
            figures[key].append(_figures(score(model, test.images, test.labels)))
        print(f"  {row['dataset']} {row['method']} seed {row['seed']}, evaluation seed {seed}: "
              f"pooled {figures['pooled'][-1]}; subset {figures['subset'][-1]}", flush=True)
    return {**row, "standard": figures, "soft_labels": pooled.targets is not None}


def standard_table(rows: list[dict[str, Any]]) -> None:
    """Markdown, one line per dataset and method: the papers' ConvNet-3 on the pools and on the subsets, mean ± std
    over every run's seed and evaluation seed."""
    print("| dataset | method | runs | soft labels | balanced accuracy: pooled | subset | AUC: pooled | subset |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, method, group in _groups([r for r in rows if "standard" in r]):
        cells = [mean_spread([f[metric] for r in group for f in r["standard"][key]])
                 for metric in ("balanced_accuracy", "auc") for key in ("pooled", "subset")]
        soft = ",".join(sorted({"yes" if r.get("soft_labels") else "no" for r in group}))
        print(f"| {dataset} | {method} | {','.join(str(r['seed']) for r in group)} | {soft} | {' | '.join(cells)} |")


def report(rows: list[dict[str, Any]]) -> None:
    """Markdown: mean ± std over seeds of accuracy / balanced accuracy / AUC for every set."""
    print(f"\n{platform.machine()}, torch {torch.__version__}; pooled metrics on the whole test split; "
          "mean ± std over seeds\n")
    print("| dataset | method | set | seeds | accuracy | balanced accuracy | AUC | per-site distill s (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, method, group in _groups(rows):
        seeds = ",".join(str(r["seed"]) for r in group)
        slowest = mean_spread([max(r["site_distill_seconds"]) for r in group])
        sets = [("pooled synthetic, uncorrected", "global_uncorrected"),
                (f"pooled synthetic, {group[0]['correction']}", "global"),
                ("random real subset, uncorrected (NOT private)", "subset_uncorrected"),
                (f"random real subset, {group[0]['correction']} (NOT private)", "subset")]
        if any("whole_train" in r for r in group):
            sets.append(("whole training split (ceiling)", "whole_train"))
        for label, key in sets:
            have = [r for r in group if key in r]
            cells = " | ".join(mean_spread([r[key][m] for r in have]) for m in METRICS)
            shown = seeds if len(have) == len(group) else ",".join(str(r["seed"]) for r in have)
            print(f"| {dataset} | {method} | {label} | {shown} | {cells} | {slowest if key == 'global' else ''} |")
        majority = mean_spread([r["majority_rate"] for r in group])
        chance = 1 / dataset_info(dataset).num_classes  # balanced accuracy of a constant prediction
        print(f"| {dataset} | {method} | always the majority class | {seeds} | {majority} | {chance:.3f} | 0.500 | |")


def one_table(rows: list[dict[str, Any]]) -> None:
    """Markdown, one line per dataset and method: the pooled model against its same-size subset and the ceiling.

    Balanced accuracy and AUC of the corrected global model and of the corrected subset (the figures
    the quality issue judges), the corrected accuracy against the majority rate, the balanced accuracy
    both give up to the correction (their uncorrected figures), and the ceiling.
    """
    print("| dataset | method | seeds | sites accepted | balanced accuracy: pooled | subset | AUC: pooled | subset | "
          "accuracy: pooled | majority | uncorrected bal. acc.: pooled | subset | ceiling bal. acc. / AUC | "
          "per-site distill s (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset, method, group in _groups(rows):
        # one ceiling per seed, however many methods' rows carry it
        ceiling = list({r["seed"]: r["whole_train"] for r in rows if r["dataset"] == dataset and "whole_train" in r}
                       .values())
        top = (f"{mean_spread([c['balanced_accuracy'] for c in ceiling])} / {mean_spread([c['auc'] for c in ceiling])}"
               if ceiling else "")
        cells = [mean_spread([r[key][metric] for r in group]) for key, metric in
                 (("global", "balanced_accuracy"), ("subset", "balanced_accuracy"), ("global", "auc"),
                  ("subset", "auc"), ("global", "accuracy"))]
        uncorrected = [mean_spread([r[key]["balanced_accuracy"] for r in group])
                       for key in ("global_uncorrected", "subset_uncorrected")]
        accepted = ",".join(str(r["sites_accepted"]) for r in group)
        print(f"| {dataset} | {method} | {','.join(str(r['seed']) for r in group)} | {accepted} | {' | '.join(cells)} | "
              f"{mean_spread([r['majority_rate'] for r in group])} | {' | '.join(uncorrected)} | {top} | "
              f"{mean_spread([max(r['site_distill_seconds']) for r in group])} |")


def rounds_table(rows: list[dict[str, Any]]) -> None:
    """Markdown, one line per round of every multi-round run: the corrected global model and the bytes so far."""
    print("| dataset | method | seed | round | balanced accuracy | AUC | accuracy | MB moved so far |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, method, group in _groups([r for r in rows if "rounds" in r]):
        for row in group:
            for r in row["rounds"]:
                print(f"| {dataset} | {method} | {row['seed']} | {r['round']} | {r['balanced_accuracy']:.3f} | "
                      f"{r['auc']:.3f} | {r['accuracy']:.3f} | {r['megabytes']:.2f} |")


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(dataset, method, its rows in seed order of arrival), sorted by dataset and method."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    return [(dataset, method, group) for (dataset, method), group in sorted(groups.items())]


def _read_rows(paths: list[str]) -> list[dict[str, Any]]:
    """The rows of earlier ``--json`` files, one JSON object per line."""
    return [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line]


def _append_row(path: str | None, row: dict[str, Any]) -> None:
    """Append ``row`` to the ``--json`` file as it is made, so an interrupted benchmark keeps its finished rows."""
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="", help="MedMNIST folder for datasets given without a path")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"], metavar="NAME[=PATH]")
    parser.add_argument("--methods", nargs="+", default=["dm"], choices=[m.value for m in DistillMethod])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epsilon", nargs="+", type=float, default=[RunConfig().epsilon],
                        help="dpdm: one run per epsilon (each site's target for its one release)")
    parser.add_argument("--delta", type=float, default=RunConfig().delta, help="dpdm: each site's delta")
    parser.add_argument("--privacy-report", action="store_true",
                        help="each site also measures its privacy report (scripts/benchmark_privacy.py measures it "
                        "on its own; off, the accuracy rows cost what they did before the report existed)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="run-config keys for every run, as `coordinator simulate --set` takes them")
    parser.add_argument("--full-epochs", type=int, default=50, help="epochs on the whole training split (0: skip)")
    parser.add_argument("--full-seeds", type=int, default=3, help="train the ceiling for the first N seeds only")
    parser.add_argument("--out-dir", default="results/benchmark")
    parser.add_argument("--json", help="append every row to this file (one JSON object per line)")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", help="only merge earlier --json files and print")
    parser.add_argument("--rescore", nargs="+", metavar="JSON",
                        help="train the global model and subset of earlier rows again on their stored pools")
    parser.add_argument("--standard-eval", nargs="+", metavar="JSON",
                        help="score earlier rows' stored pools with the papers' ConvNet-3 evaluation")
    parser.add_argument("--standard-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--one-table", action="store_true",
                        help="with --summarize: one line per dataset and method instead of one per set")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.summarize:
        rows = _read_rows(args.summarize)
        (one_table if args.one_table else report)(rows)
        if any("standard" in r for r in rows):
            print()
            standard_table(rows)
        if any("rounds" in r for r in rows):
            print()
            rounds_table(rows)
        return
    if args.standard_eval:
        rows = []
        for row in _read_rows(args.standard_eval):
            rows.append(standard_one(row, args))
            _append_row(args.json, rows[-1])
        standard_table(rows)
        return
    if args.rescore:
        rows = _read_rows(args.rescore)
        for row in rows:
            _append_row(args.json, rescore_one(row, args))
        return
    rows = []
    for spec in args.datasets:
        name, _, path = spec.partition("=")
        for method in args.methods:
            epsilons = args.epsilon if method == DistillMethod.DPDM else [None]
            for epsilon in epsilons:
                for seed in args.seeds:
                    row = run_one(name, path or args.data_root, DistillMethod(method), seed, args, epsilon)
                    rows.append(row)
                    _append_row(args.json, row)
    report(rows)


if __name__ == "__main__":
    main()
