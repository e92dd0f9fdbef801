"""Simulation only: what the pooled synthetic set is worth against the same number of real images.

A real coordinator never holds patient images, so this runs only where one machine simulates every
site (``coordinator simulate``, the benchmarks). It draws a random real subset with the same images
per class as the pooled set from the union of the sites' training shares, trains the global model's
network on it the same way (same settings, same class-imbalance correction, the real prior being
the sites' summed counts), and scores it with the same pooled metrics on the same test images. The
subset ships real images, so it is a reference, **not** something the federation could release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from coordinator.evaluate import Metrics
from coordinator.pool import PooledSet
from coordinator.summary import Figures, Yardstick
from coordinator.train import train_corrected
from shared.config import RunConfig, resolve_device
from shared.datasets import IMAGE_SIZE, reference_subset
from shared.metrics import EvalCounts, log_odds
from shared.models import ConvNet
from shared.schemas import ModelSpec
from shared.training import predict_logits

FIGURES = ("accuracy", "balanced_accuracy", "auc")


def score(model: ConvNet, images: np.ndarray, labels: np.ndarray) -> Metrics:
    """The pooled metrics (``coordinator.evaluate``) of a model on one whole test split."""
    logits = predict_logits(model, torch.from_numpy(images), torch.device("cpu")).numpy()
    return Metrics.of(EvalCounts.from_scores(labels, log_odds(logits)))


def random_subset_yardstick(config: RunConfig, pooled_class_counts: list[int]) -> Yardstick:
    """Accuracy, balanced accuracy and AUC of a random real subset the size of the pooled set, on the test split,
    with and without the class-imbalance correction."""
    from harness.source import read_source  # the data the simulated sites shared, read as their shares were

    local = read_source(config.dataset, config.data_root)
    train, test, info = local.splits["train"], local.splits["test"], local.info
    subset = train.subset(reference_subset(train.labels, pooled_class_counts, config.seed))
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=IMAGE_SIZE,
                     network=config.network())
    counts = np.bincount(train.labels, minlength=info.num_classes).astype(np.float64)
    prior = (counts + 1) / (counts + 1).sum()  # as the coordinator smooths the sites' released counts
    pool = PooledSet(torch.from_numpy(subset.images), torch.from_numpy(subset.labels), {"random real subset": len(subset)})
    device = resolve_device(config.device)
    models = train_corrected(pool, spec, config.train_settings(), device, config.imbalance, prior)
    models = models.tuned_on(train.images, train.labels, device)  # the union of the sites' training shares
    return Yardstick(images=len(subset), correction=models.correction.value, scale=models.scale,
                     corrected=Figures(**figures(score(models.model, test.images, test.labels))),
                     uncorrected=Figures(**figures(score(models.uncorrected, test.images, test.labels))))


def figures(metrics: Metrics | BaseModel | Mapping[str, Any]) -> dict[str, float | None]:
    """Accuracy, balanced accuracy and AUC of a ``Metrics``, a summary's part or a dict of them; None where undefined."""
    if isinstance(metrics, Metrics):
        values: Mapping[str, Any] = asdict(metrics)
    elif isinstance(metrics, BaseModel):
        values = metrics.model_dump()
    else:
        values = metrics
    return {k: None if values[k] is None or math.isnan(values[k]) else float(values[k]) for k in FIGURES}
