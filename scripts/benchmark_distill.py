"""Seconds per distillation iteration and peak memory for DC, DM and MTT; prints a Markdown table.

Each measurement runs in a fresh process, so its peak resident memory is its own. The data are
generated (random images, ``--per-class`` per class): an iteration costs the same on any pixels.

    python scripts/benchmark_distill.py                       # the table in docs/benchmarks.md
    python scripts/benchmark_distill.py --reference           # DC at the published reference settings
    python scripts/benchmark_distill.py --methods dm --ipcs 1 --shapes grey --iterations 5

``--reference`` times DC at the settings the published DC code was timed with (RGB 32x32, 7
classes, ConvNet width 128, 256 real images per class, the paper's loops), once with this engine
and once with chunking turned off, which is the published code's loop structure: one forward and
backward pass over each class's whole real batch.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time

import torch

from shared.methods import DCConfig, DistillConfig, DMConfig, MTTConfig, NetworkSpec
from site_agent.labelled import LabelledImages

SHAPES = {"grey": (1, 28), "rgb": (3, 28), "rgb32": (3, 32)}
PAPER_NET = NetworkSpec(depth=3, width=128)


def make_config(method: str, ipc: int, iterations: int, network: NetworkSpec) -> DistillConfig:
    """The method's paper settings (batch_real 256, paper loops; MTT: its defaults, one short expert)."""
    if method == "dc":
        return DCConfig(ipc=ipc, iterations=iterations, batch_real=256, network=network)
    if method == "dm":
        return DMConfig(ipc=ipc, iterations=iterations, batch_real=256, network=network)
    # One expert of 2 epochs: its cost is reported per expert-epoch (a site trains num_experts x
    # train_epochs_expert of them once, then reuses them); the iteration cost does not depend on it.
    return MTTConfig(ipc=ipc, iterations=iterations, network=network, num_experts=1, train_epochs_expert=2,
                     max_start_epoch=1, expert_epochs=2)


def generated_images(shape: str, classes: int, per_class: int) -> LabelledImages:
    channels, size = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(classes * per_class, channels, size, size, generator=gen) * 2 - 1
    labels = torch.arange(classes).repeat_interleave(per_class)
    return LabelledImages(images.numpy(), labels.numpy())


def _measure(job: dict, out: mp.Queue) -> None:
    """In a fresh process: time ``iterations`` iterations (after one warm-up run) and record peak RSS."""
    from shared import training
    from site_agent.distill import distill
    from site_agent.distill.experts import load_or_train_experts  # noqa: F401  (import cost outside timings)

    torch.set_num_threads(job["threads"])
    if job["no_chunks"]:
        training._CPU_CHUNK_FLOATS = 2**62  # one chunk = the whole batch
    data = generated_images(job["shape"], job["classes"], job["per_class"])
    network = NetworkSpec(depth=3, width=job["width"])
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict = {}
    if job["method"] == "mtt":
        # Expert training is a one-off cost (cached at the site): time it apart from the iterations.
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as cache:

            def timed(iterations: int) -> float:
                config = make_config("mtt", job["ipc"], iterations, network)
                started = time.perf_counter()
                distill(data, job["classes"], config, torch.device("cpu"), progress=False, expert_cache_dir=Path(cache))
                return time.perf_counter() - started

            with_experts = timed(1)  # cache miss: trains the expert
            cached = timed(1)  # cache hit
            one_iteration = (timed(1 + job["iterations"]) - cached) / job["iterations"]
        result["expert_epoch_seconds"] = (with_experts - cached) / 2
    else:
        if job["iterations"] > 1:  # warm-up (one-off allocations), when iterations are short enough to feel it
            config = make_config(job["method"], job["ipc"], 1, network)
            distill(data, job["classes"], config, torch.device("cpu"), progress=False)
        config = make_config(job["method"], job["ipc"], job["iterations"], network)
        started = time.perf_counter()
        distill(data, job["classes"], config, torch.device("cpu"), progress=False)
        one_iteration = (time.perf_counter() - started) / job["iterations"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(seconds_per_iteration=one_iteration, peak_rss_mib=peak / 1024, growth_mib=(peak - baseline) / 1024)
    out.put(result)


def measure(job: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(job, queue))
    process.start()
    result = queue.get()
    process.join()
    return {**job, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dc", "dm", "mtt"], choices=["dc", "dm", "mtt"])
    parser.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--shapes", nargs="+", default=["grey", "rgb"], choices=list(SHAPES))
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--width", type=int, default=128, help="ConvNet width (paper: 128)")
    parser.add_argument("--iterations", type=int, default=0, help="timed iterations (0: 1 for DC, 20 for DM, 5 for MTT)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="DC at the published reference settings, both loop structures")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    default_iterations = {"dc": 1, "dm": 20, "mtt": 5}
    jobs = []
    if args.reference:
        for ipc in args.ipcs:
            for no_chunks in (True, False):
                jobs.append({"method": "dc", "ipc": ipc, "shape": "rgb32", "classes": 7, "per_class": 300,
                             "width": 128, "iterations": 1, "threads": args.threads, "no_chunks": no_chunks})
    else:
        for method in args.methods:
            for shape in args.shapes:
                for ipc in args.ipcs:
                    jobs.append({"method": method, "ipc": ipc, "shape": shape, "classes": args.classes,
                                 "per_class": args.per_class, "width": args.width, "threads": args.threads,
                                 "iterations": args.iterations or default_iterations[method], "no_chunks": False})

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads\n")
    print("| method | data | ipc | loop | s / iteration | expert training s per expert-epoch | peak RSS MiB | growth MiB |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for job in jobs:
        row = measure(job)
        rows.append(row)
        channels, size = SHAPES[row["shape"]]
        loop = "one batch per class (published structure)" if row["no_chunks"] else "this engine"
        expert = f"{row['expert_epoch_seconds']:.1f}" if "expert_epoch_seconds" in row else "-"
        print(f"| {row['method']} | {row['classes']} classes, {channels}x{size}x{size}, width {row['width']} | "
              f"{row['ipc']} | {loop} | {row['seconds_per_iteration']:.2f} | {expert} | "
              f"{row['peak_rss_mib']:.0f} | {row['growth_mib']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
