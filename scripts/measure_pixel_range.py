"""How far from the normalised image range [-1, 1] each method's CPU preset takes its synthetic pixels.

The bundle format's pixel cap (``shared.bundle.MAX_ABS_PIXEL``) is set from this table: above every
honest set measured here with a margin, so that no site can poison the pool with extreme values.

    python scripts/measure_pixel_range.py --data-root ../shared/data/medmnist --datasets breastmnist retinamnist
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from shared.config import RunConfig
from shared.methods import DistillMethod
from site_agent.distill import distill
from site_agent.medmnist_files import load_medmnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "retinamnist"])
    parser.add_argument("--methods", nargs="+", default=[m.value for m in DistillMethod])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    print("| dataset | method | ipc | iterations | max abs pixel | 99.9th percentile abs pixel | s |")
    print("|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        info, train, _ = load_medmnist(dataset, args.data_root or None)
        for method in args.methods:
            config = RunConfig(method=DistillMethod(method), ipc=args.ipc).distill_config()
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as cache:
                result = distill(train, info.num_classes, config, torch.device("cpu"), progress=False,
                                 expert_cache_dir=Path(cache))
            seconds = time.perf_counter() - started
            pixels = result.images.abs().flatten()
            print(f"| {dataset} | {method} | {args.ipc} | {config.iterations} | {float(pixels.max()):.2f} | "
                  f"{float(torch.quantile(pixels, 0.999)):.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
