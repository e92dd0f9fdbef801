"""What the coordinator costs as the federation grows: simulated runs of 5, 10 and 20 sites at the smallest settings.

Each size runs in a fresh process (``coordinator simulate`` in-process, so that process is the coordinator and
its Flower Simulation Engine driver; the sites run in Ray actors beside it). From the run's summary: the
seconds of each coordinator stage (receive = open and check every bundle; train = pool and train the global
model; evaluate = send the model and sum every site's counts). From the process: its peak resident memory.

    python scripts/benchmark_many_sites.py --data-root ../shared/data/medmnist --sites 5 10 20 --json sites.json
    python scripts/benchmark_many_sites.py --data-root ../shared/data/medmnist --ipc 10    # bigger bundles
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

# The smallest honest round (tests/deployment/live.py's TINY), with the privacy report off: its cost is the
# sites', measured in docs/privacy.md, not the coordinator's.
SMALLEST = {"ipc": 1, "iterations": 2, "batch_real": 16, "outer_loop": 1, "inner_loop": 1, "net_width": 16,
            "train_epochs": 10, "privacy_report": False, "method": "dc", "partition": "iid"}


def one(sites: int, data_root: str, dataset: str, out_dir: str, ipc: int) -> dict:
    from harness.simulate import simulate
    from shared.config import RunConfig

    config = RunConfig(dataset=dataset, data_root=data_root, sites=sites, min_sites=sites, out_dir=out_dir,
                       node_wait_timeout=600.0, **(SMALLEST | {"ipc": ipc}))
    started = time.perf_counter()
    _, summary = simulate(config, yardstick=False)
    wall = time.perf_counter() - started
    stages = summary.stage_seconds
    return {"sites": sites, "accepted": summary.sites_accepted, "wall_s": round(wall, 1),
            "receive_s": stages.get("receive"), "train_s": stages.get("train"), "evaluate_s": stages.get("evaluate"),
            "distill_s": stages.get("distill"), "pooled_images": summary.pooled.images,
            "test_images": summary.global_model.num_examples, "ipc": ipc,
            "bundle_bytes": sum(s.bundle_bytes for s in summary.sites),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--sites", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--ipc", type=int, default=SMALLEST["ipc"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    if args.one:
        with TemporaryDirectory() as out:
            print(json.dumps(one(args.one, args.data_root, args.dataset, out, args.ipc)))
        return
    rows = []
    for sites in args.sites:
        child = subprocess.run([sys.executable, __file__, "--one", str(sites), "--data-root", args.data_root,
                                "--dataset", args.dataset, "--ipc", str(args.ipc)], check=False, capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"{sites} sites failed:\n{child.stderr[-3000:]}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(f"\n{args.dataset}, smallest settings, ipc {args.ipc} ({platform.machine()}, {platform.python_version()})\n")
    print("| sites | accepted | bundle KB (all) | receive s | pool + train s | evaluate s | distill s (sites, in "
          "parallel) | pooled images | run wall s | coordinator peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sites']} | {r['accepted']} | {r['bundle_bytes'] / 1e3:.0f} | {r['receive_s']:.3f} | "
              f"{r['train_s']:.2f} | {r['evaluate_s']:.2f} | {r['distill_s']:.1f} | {r['pooled_images']} | "
              f"{r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
