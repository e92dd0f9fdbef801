"""The run's plots (matplotlib PNG): metrics per round against bytes moved, and what each site holds per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.summary import RoundRecord, SiteEntry


def pyplot():
    """matplotlib's pyplot drawing to files only: a coordinator has no display."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def plot_rounds(rounds: list[RoundRecord], path: Path) -> None:
    """Balanced accuracy and AUC of the global model against round and against cumulative bytes moved."""
    plt = pyplot()
    numbers = [r.round for r in rounds]
    megabytes = [r.bytes.cumulative / 1e6 for r in rounds]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    for axis, x, label in ((axes[0], numbers, "round"), (axes[1], megabytes, "cumulative MB moved (up + down)")):
        for metric, name in (("balanced_accuracy", "balanced accuracy"), ("auc", "macro AUC")):
            values = [float("nan") if (v := getattr(r.global_model, metric)) is None else v for r in rounds]
            axis.plot(x, values, marker="o", label=name)
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_xticks(numbers)
    axes[0].set_ylabel("pooled over all sites' test images")
    axes[0].legend()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_class_coverage(sites: list[SiteEntry], class_names: list[str], path: Path) -> None:
    """Per class, each accepted site's real training images (as its manifest released them) or, where it withheld
    them, its synthetic images: which site covers which class. No file when no site was accepted."""
    shown = [s for s in sites if s.class_counts is not None]
    if not shown:
        return
    plt = pyplot()
    real = all(s.real_class_counts is not None for s in shown)
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(class_names) + 2), 3.5), constrained_layout=True)
    width = 0.8 / len(shown)
    positions = np.arange(len(class_names))
    for i, site in enumerate(shown):
        counts = (site.real_class_counts if real else site.class_counts) or {}
        axis.bar(positions + i * width - 0.4 + width / 2, [counts.get(c, 0) for c in range(len(class_names))],
                 width, label=str(site.site_id))
    axis.set_xticks(positions, [name[:20] for name in class_names], rotation=20, ha="right")
    axis.set_ylabel("real training images (released counts)" if real else "synthetic images in the set")
    axis.legend(title="site", fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=120)
    plt.close(figure)
