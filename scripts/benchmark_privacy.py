"""What a release leaks: the site's privacy report for each method and initialisation, on one site's share.

For each dataset, method and init (noise / real) it takes share ``--site`` of ``--sites`` Dirichlet(0.5)
shares (the main job's partition), distills with the method's CPU preset, and runs the report a site
runs before release (``site_agent.privacy.report``): membership attacks on a model trained on the set
(threshold, and LiRA with ``--shadows`` shadow models) against the same attacks on a random real subset
of the same size, nearest-neighbour memorisation, and utility on the site's held-out images. It prints
one line per configuration and appends it to ``--json``; ``--summarize`` prints the Markdown table of
docs/privacy.md.

    python scripts/benchmark_privacy.py --datasets breastmnist=../shared/data/medmnist \\
        --methods idm dm dc mtt --inits noise real --shadows 0 --json privacy.jsonl
    python scripts/benchmark_privacy.py --datasets breastmnist=../shared/data/medmnist --methods idm --shadows 4 \\
        --json lira.jsonl
    python scripts/benchmark_privacy.py --datasets breastmnist=../shared/data/medmnist --methods idm --inits noise \
        --no-soft-labels --json classes.jsonl    # the set labelled with its classes only
    python scripts/benchmark_privacy.py --summarize privacy.jsonl lira.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from harness.sites import split_shares
from shared.config import RunConfig
from shared.methods import DistillMethod, InitMode
from shared.schemas import PartitionScheme
from site_agent.distill import distill
from site_agent.policy import PrivacyLimits
from site_agent.privacy.report import ShadowSettings, measure_privacy


def run_one(dataset: str, root: str, method: DistillMethod, init: InitMode, args: argparse.Namespace) -> dict[str, Any]:
    images = split_shares(dataset, root, args.sites, PartitionScheme.DIRICHLET, 0.5, args.seed)[args.site].images
    run = RunConfig(dataset=dataset, method=method, init=init, seed=args.seed, soft_labels=args.soft_labels)
    config = run.distill_config()
    device = torch.device(args.device)
    synthetic = distill(images.train, images.info.num_classes, config, device, progress=False, min_real_per_class=10,
                        soft_labels=run.soft_label_spec())
    limits = PrivacyLimits(shadow_models=args.shadows, max_seconds=None)
    started = time.perf_counter()
    report = measure_privacy(synthetic, images, limits, device, ShadowSettings(min_real_per_class=10), seed=args.seed)
    return {"dataset": dataset, "method": method.value, "init": init.value, "ipc": config.ipc,
            "soft_labels": synthetic.soft_labels is not None,
            "site": f"{args.site} of {args.sites}", "synthetic_images": len(synthetic.labels), "distill_seconds": round(synthetic.seconds, 1),
            "report_seconds": round(time.perf_counter() - started, 1), "summary": report.summary.model_dump(mode="json")}


def summarize(paths: list[Path]) -> str:
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    lines = [("| dataset | method | init | labels | threshold AUC [95 % CI] | TPR@1% FPR | TPR@0.1% FPR | LiRA AUC | "
              "LiRA TPR@0.1% FPR | real subset: threshold AUC | TPR@1% FPR | TPR@0.1% FPR | LiRA AUC | flagged | "
              "held-out bal. acc. | distill s | report s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        mine, ref = s["threshold_attack"], s["reference_threshold_attack"]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['init']} | {'soft' if r.get('soft_labels') else 'classes'} | {_auc(mine)} | {_tpr(mine, 'tpr_at_1pct_fpr')} | "
            f"{_tpr(mine)} | {_auc(s['lira'])} | {_tpr(s['lira'])} | {_auc(ref)} | {_tpr(ref, 'tpr_at_1pct_fpr')} | "
            f"{_tpr(ref)} | {_auc(s['reference_lira'])} | {s['nearest_real_flagged']}/{r['synthetic_images']} | "
            f"{_num(s['site_balanced_accuracy'])} | {r['distill_seconds']:.0f} | {r['report_seconds']:.0f} |")
    return "\n".join(lines)


def _auc(attack: dict[str, Any] | None) -> str:
    if not attack:
        return "-"
    a = attack["auc"]
    return f"{a['value']:.3f} [{a['low']:.2f}, {a['high']:.2f}]"


def _tpr(attack: dict[str, Any] | None, key: str = "tpr_at_0_1pct_fpr") -> str:
    return "-" if not attack else f"{attack[key]['value']:.3f}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[], help="name=data-root (a folder or an .npz export)")
    parser.add_argument("--methods", nargs="+", type=DistillMethod, default=[DistillMethod.IDM])
    parser.add_argument("--inits", nargs="+", type=InitMode, default=[InitMode.NOISE, InitMode.REAL])
    parser.add_argument("--shadows", type=int, default=0, help="LiRA shadow models (each one distillation)")
    parser.add_argument("--soft-labels", action=argparse.BooleanOptionalAction, default=RunConfig().soft_labels,
                        help="label the set with the site's teacher, as a run does by default")
    parser.add_argument("--site", type=int, default=0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summarize", nargs="+", type=Path)
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return
    logging.basicConfig(level=logging.WARNING)
    for spec in args.datasets:
        dataset, _, root = spec.partition("=")
        for method in args.methods:
            for init in args.inits:
                row = run_one(dataset, root, method, init, args)
                print(json.dumps(row), flush=True)
                if args.json:
                    with args.json.open("a") as out:
                        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
