"""Write a long-tailed resample of a MedMNIST dataset as a hospital-style ``.npz`` export, for benchmarks.

Every image of the head class is kept; each other class is subsampled (seeded, without replacement) to its
share of the result, the same shares in the training and the test split, so the test split is as skewed as
the training one. The default shares are issue 28's long-tailed RetinaMNIST: the head class at least 60 %,
the two rarest at 5 %. The source is read as a site reads its data (the official file through medmnist's
loader, MD5 checked); write the export outside the repository and pass it to a benchmark as ``NAME=PATH``:

    python scripts/make_long_tailed.py --data-root ../shared/data/medmnist --dataset retinamnist \\
        --out /tmp/retinamnist_long_tailed.npz
    python scripts/benchmark_federation.py --datasets retinamnist=/tmp/retinamnist_long_tailed.npz \\
        --methods idm --sites 4 --alpha 0.3 --seeds 0 1 2 --json retina_lt.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.sites import write_export
from harness.source import read_source
from site_agent.labelled import LabelledImages, SiteImages

# Issue 28's resample of RetinaMNIST: class 0 (no retinopathy) the head, classes 1 and 4 the rare tail.
RETINA_SHARES = {0: 0.62, 1: 0.05, 2: 0.15, 3: 0.13, 4: 0.05}


def long_tailed(part: LabelledImages, shares: dict[int, float], rng: np.random.Generator) -> LabelledImages:
    """``part`` with every image of the head (largest share) class and the others subsampled to their shares."""
    head = max(shares, key=shares.__getitem__)
    total = int(np.sum(part.labels == head) / shares[head])
    keep = []
    for label, share in sorted(shares.items()):
        index = np.flatnonzero(part.labels == label)
        wanted = len(index) if label == head else min(len(index), round(total * share))
        keep.append(rng.choice(index, size=wanted, replace=False))
    chosen = np.sort(np.concatenate(keep))
    return LabelledImages(part.images[chosen], part.labels[chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder (or file) of the official MedMNIST data")
    parser.add_argument("--dataset", default="retinamnist")
    parser.add_argument("--out", type=Path, required=True, help="the export to write (keep it out of the repository)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = read_source(args.dataset, args.data_root)
    rng = np.random.default_rng(args.seed)
    train, test = (long_tailed(source.splits[split], RETINA_SHARES, rng) for split in ("train", "test"))
    write_export(SiteImages(source.info, train, test, source.preprocessing), args.out)
    for name, part in (("train", train), ("test", test)):
        counts = np.bincount(part.labels, minlength=source.info.num_classes)
        print(f"{name}: {len(part.labels)} images, per class {counts.tolist()} "
              f"({', '.join(f'{c / counts.sum():.0%}' for c in counts)})")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
