"""How alike a dataset's own real images are, by the near-copy check's measure.

The near-copy check (``site_agent.privacy.near_copy``) refuses a release in which a synthetic image correlates
more than ``max_real_similarity`` (0.95) with a local image. This script asks the same question of real images:
for ``--queries`` training images, the highest correlation (over the check's small shifts) with any other of
``--reference`` training images, and prints its median and range. Where real images are this alike, a synthetic
image that looks like one of them fails the check without copying anyone (docs/privacy.md, "Starting from means").

    python scripts/measure_real_similarity.py --dataset bloodmnist \\
        --data ../shared/data/pbc-blood-cells/pbc-blood-cells_28.npz --reference 3000
    python scripts/measure_real_similarity.py --dataset breastmnist --data ../shared/data/medmnist
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from site_agent.data import read_local_data
from site_agent.privacy.near_copy import nearest_real_similarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="MedMNIST flag (the classes and channels)")
    parser.add_argument("--data", required=True, help="a MedMNIST root, an .npz export or an image folder")
    parser.add_argument("--queries", type=int, default=20, help="training images whose closest other image is sought")
    parser.add_argument("--reference", type=int, default=None, help="other training images searched (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = read_local_data(args.data, args.dataset).splits["train"]
    order = np.random.default_rng(args.seed).permutation(len(train))
    queries = torch.from_numpy(train.images[order[: args.queries]])
    rest = order[args.queries :] if args.reference is None else order[args.queries : args.queries + args.reference]
    reference = torch.from_numpy(train.images[rest])  # disjoint from the queries: no image meets itself
    closest = [nearest_real_similarity(query[None], reference) for query in queries]
    print(f"{args.dataset}: {len(queries)} training images against {len(reference)} others; closest other image's "
          f"correlation: median {np.median(closest):.3f}, min {min(closest):.3f}, max {max(closest):.3f} "
          f"(the near-copy limit's default is 0.95)")


if __name__ == "__main__":
    main()
