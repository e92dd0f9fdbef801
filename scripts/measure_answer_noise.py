"""What the sites' coarse, noisy answers cost the federation's figures (issue 27, part 2).

For each dataset and seed: a quick global model (the federation's ConvNet, width 64 and depth 3, trained on a
random real subset of ``--per-class`` images per class, as a pooled synthetic set would be: small and balanced),
a Dirichlet(0.5) split of the training and test splits over ``--sites`` sites, and then, per epsilon:

- evaluate: the pooled accuracy, balanced accuracy and macro AUC from the sites' released answers (12 fixed
  log-odds bins, discrete Laplace noise, clipped and made consistent: ``site_agent.evaluate``), against the
  exact figures of the same model on the same images (AUC from scikit-learn on the per-image scores), over
  ``--draws`` draws of the noise: mean absolute and mean signed error;
- tune: the logit-adjustment scale chosen from the sites' released tuning answers against the one their exact
  counts choose, and what the difference costs the corrected model's accuracy and balanced accuracy on the test
  split (mean absolute change).

Every site commits its exact counts (the default policy: release_class_counts, rounding 1), so its answers are
clipped there. Prints a Markdown table (and writes ``--json``). About 3 minutes on one core for the defaults.

    python scripts/measure_answer_noise.py --data-root ../shared/data/medmnist \\
        --datasets breastmnist retinamnist \\
        pneumoniamnist=../shared/data/medmnist/unverified/pneumoniamnist_train_unordered_unverified.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from coordinator.imbalance import choose_scale, logit_shift
from harness.partition import partition
from shared.datasets import IMAGE_SIZE, reference_subset
from shared.methods import NetworkSpec
from shared.metrics import EvalCounts, hits_by_scale, log_odds
from shared.models import build_model
from shared.schemas import ModelSpec, PartitionScheme
from shared.training import TrainSettings, predict_logits, train_classifier
from site_agent.data import read_local_data
from site_agent.evaluate import released_evaluation, released_tuning

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/medmnist", help="folder of the official .npz files")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"],
                        help="flags, or flag=path for an export elsewhere")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epsilon", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=30, help="training images per class of the quick model")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100, help="draws of the noise per epsilon")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for entry in args.datasets:
        name, _, path = entry.partition("=")
        local = read_local_data(path or str(Path(args.data_root) / f"{name}.npz"), name)
        for seed in args.seeds:
            rows += measure(name, local, seed, args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def measure(name: str, local, seed: int, args: argparse.Namespace) -> list[dict]:
    """One quick model of ``name`` at ``seed``, scored exactly and through each epsilon's released answers."""
    started = time.perf_counter()
    train, test, info = local.splits["train"], local.splits["test"], local.info
    k = info.num_classes
    spec = ModelSpec(in_channels=info.in_channels, num_classes=k, image_size=IMAGE_SIZE,
                     network=NetworkSpec(depth=3, width=64))
    picked = reference_subset(train.labels, [args.per_class] * k, seed)
    torch.manual_seed(seed)
    model = build_model(spec)
    train_classifier(model, torch.from_numpy(train.images[picked]), torch.from_numpy(train.labels[picked]),
                     TrainSettings(epochs=args.epochs, seed=seed), CPU)
    model.eval()
    test_logits = predict_logits(model, torch.from_numpy(test.images), CPU).numpy()
    train_logits = predict_logits(model, torch.from_numpy(train.images), CPU).numpy()
    shares = partition(train.labels, test.labels, args.sites, PartitionScheme.DIRICHLET, 0.5, seed)

    scores = log_odds(test_logits)
    exact = EvalCounts.from_scores(test.labels, scores)  # exact counts over the 12 bins (binning error only)
    exact_auc = (roc_auc_score(test.labels, scores[:, 1]) if k == 2 else
                 float(np.mean([roc_auc_score(test.labels == c, scores[:, c]) for c in range(k)])))
    site_counts = [EvalCounts.from_scores(test.labels[te], scores[te]) for _, te in shares]

    # Tuning: the shift from the sites' summed training counts against the balanced training subset.
    prior = (np.bincount(train.labels, minlength=k) + 1) / (len(train.labels) + k)
    shift = logit_shift(prior, np.full(k, 1 / k))
    site_tuning = [(np.bincount(train.labels[tr], minlength=k), hits_by_scale(train_logits[tr], train.labels[tr], shift))
                   for tr, _ in shares]
    exact_scale = choose_scale(sum(h for _, h in site_tuning))

    def corrected(scale: float) -> tuple[float, float]:
        counts = EvalCounts.from_scores(test.labels, log_odds(test_logits + scale * shift))
        return counts.accuracy(), counts.balanced_accuracy()

    exact_corrected = corrected(exact_scale)
    base = {"dataset": name, "seed": seed, "test_images": len(test.labels),
            "site_test_images": [len(te) for _, te in shares], "balanced_accuracy": exact.balanced_accuracy(),
            "accuracy": exact.accuracy(), "auc": exact_auc, "binned_auc": exact.auc(),
            "auc_error_bound": exact.auc_error_bound(), "tuned_scale": exact_scale,
            "tuned_accuracy": exact_corrected[0], "tuned_balanced_accuracy": exact_corrected[1]}
    rows = []
    for epsilon in args.epsilon:
        errors, tune_changes, scales = [], [], []
        for _ in range(args.draws):
            pooled = EvalCounts.empty(k)
            for counts in site_counts:
                pooled = pooled + released_evaluation(counts, epsilon, counts.class_counts.tolist())
            errors.append((pooled.accuracy() - exact.accuracy(), pooled.balanced_accuracy() - exact.balanced_accuracy(),
                           pooled.auc() - exact_auc))
            hits = sum(released_tuning(n, h, epsilon, n.tolist())[1] for n, h in site_tuning)
            scale = choose_scale(hits)
            scales.append(scale)
            tuned = corrected(scale)
            tune_changes.append((tuned[0] - exact_corrected[0], tuned[1] - exact_corrected[1]))
        errors, tune_changes = np.array(errors), np.array(tune_changes)
        rows.append({**base, "epsilon": epsilon, "draws": args.draws,
                     "abs_error": dict(zip(("accuracy", "balanced_accuracy", "auc"), np.abs(errors).mean(0).tolist())),
                     "mean_error": dict(zip(("accuracy", "balanced_accuracy", "auc"), errors.mean(0).tolist())),
                     "tuned_scale_median": float(np.median(scales)),
                     "tuning_abs_change": dict(zip(("accuracy", "balanced_accuracy"),
                                                   np.abs(tune_changes).mean(0).tolist())),
                     "seconds": round(time.perf_counter() - started, 1)})
    return rows


def table(rows: list[dict]) -> str:
    """The rows as one Markdown table."""
    lines = [("| dataset | seed | test images (per site) | exact bal. acc. / AUC | 12-bin AUC (bound) | ε | "
             "\\|error\\| acc. / bal. acc. / AUC (mean signed) | scale exact / noisy median | tuned model "
             "\\|change\\| acc. / bal. acc. |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, m, t = r["abs_error"], r["mean_error"], r["tuning_abs_change"]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['test_images']} ({', '.join(map(str, r['site_test_images']))}) | "
            f"{r['balanced_accuracy']:.3f} / {r['auc']:.3f} | {r['binned_auc']:.3f} ({r['auc_error_bound']:.3f}) | "
            f"{r['epsilon']:g} | {a['accuracy']:.3f} / {a['balanced_accuracy']:.3f} / {a['auc']:.3f} "
            f"({m['accuracy']:+.3f} / {m['balanced_accuracy']:+.3f} / {m['auc']:+.3f}) | "
            f"{r['tuned_scale']:g} / {r['tuned_scale_median']:g} | {t['accuracy']:.3f} / {t['balanced_accuracy']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
