"""Pieces shared by the distillation methods: real-batch sampling, initialisation, gradient distance,
chunked embeddings, and the wall-time deadline a site's policy may set. Cache-sized chunked
gradients (``chunk_size``, ``mean_loss_gradients``) live in ``shared.training``, which trains every
network in the project."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.cluster import KMeans

from shared.methods import MEAN_INIT_GROUP, InitMode

# Called after each iteration with (iterations done, current synthetic images in pixel space);
# benchmarks use it to score the set as it improves.
Observer = Callable[[int, torch.Tensor], None]


def sample_batch(images: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Up to ``n`` distinct images (all of them when the class is smaller)."""
    if len(images) <= n:
        return images
    idx = torch.randperm(len(images), generator=gen)[:n]
    return images[idx.to(images.device)]


def initial_images(
    real_by_class: dict[int, torch.Tensor], ipc: int, init: InitMode, gen: torch.Generator
) -> torch.Tensor:
    """Starting synthetic images (K * ipc, C, H, W), class-major, in the order of the dict's keys.

    ``NOISE`` draws standard normal pixels. ``MEANS`` starts each class from the means of clusters of its real
    images (:func:`cluster_means`), noise for a class too small to average. ``REAL`` starts from randomly
    chosen local images: the release then begins as a copy of patients' images, which is why a site must opt in
    to it.
    """
    first = next(iter(real_by_class.values()))
    shape = (len(real_by_class) * ipc, *first.shape[1:])
    if init == InitMode.NOISE:
        return torch.randn(shape, generator=gen).to(first.device)
    picks = []
    for images in real_by_class.values():
        if init == InitMode.MEANS:
            means = cluster_means(images, ipc, MEAN_INIT_GROUP, int(torch.randint(2**31, (1,), generator=gen)))
            picks.append(torch.randn((ipc, *shape[1:]), generator=gen).to(first.device) if means is None else means)
            continue
        idx = torch.randint(len(images), (ipc,), generator=gen) if len(images) < ipc else torch.randperm(len(images), generator=gen)[:ipc]
        picks.append(images[idx.to(images.device)])
    return torch.cat(picks).clone()


def cluster_means(images: torch.Tensor, count: int, group: int, seed: int) -> torch.Tensor | None:
    """``count`` means (count, C, H, W) of ``images``, each over at least ``group`` of them; None for fewer than
    ``group`` images.

    k-means in pixel space gives ``count`` clusters, so the starting images differ as the class's images do
    (a cell's size, a stain's tint) instead of all being the class mean. A cluster smaller than ``group`` gives
    way to the mean of the ``group`` images nearest its centre: no starting image is any one patient's image.
    """
    if len(images) < group:
        return None
    flat = images.flatten(1).cpu().double().numpy()
    clusters = min(count, len(images))
    fitted = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit(flat)
    means = []
    for c, centre in enumerate(fitted.cluster_centers_):
        members = np.flatnonzero(fitted.labels_ == c)
        if len(members) < group:
            members = np.argsort(((flat - centre) ** 2).sum(1))[:group]
        means.append(flat[members].mean(0))
    starts = [means[i % clusters] for i in range(count)]  # fewer images than starts wanted: repeat (DSA varies them)
    return torch.from_numpy(np.stack(starts)).float().view(count, *images.shape[1:]).to(images.device)


def starting_images(
    real_by_class: dict[int, torch.Tensor],
    ipc: int,
    init: InitMode,
    gen: torch.Generator,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """:func:`initial_images`, or, in a refinement round, the site's previous set where it has one.

    ``start_from`` is (images (N, C, H, W), labels (N,)) released in the previous round; a class it
    holds fewer than ``ipc`` images of is completed from the usual initialisation.
    """
    fresh = initial_images(real_by_class, ipc, init, gen)
    if start_from is None:
        return fresh
    images, labels = start_from
    for k, cls in enumerate(real_by_class):
        kept = images[labels == cls][:ipc].to(fresh.device, fresh.dtype)
        fresh[k * ipc : k * ipc + len(kept)] = kept
    return fresh


def gradient_distance(grads_a: list[torch.Tensor], grads_b: list[torch.Tensor]) -> torch.Tensor:
    """DC's layer-wise distance: sum over output units of (1 - cosine) between gradient rows.

    Biases and norm parameters (1-D) are left out, as in the paper.
    """
    total = grads_a[0].new_zeros(())
    for a, b in zip(grads_a, grads_b, strict=True):
        if a.dim() == 1:
            continue
        a, b = a.flatten(1), b.flatten(1)  # (out, fan_in)
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def embed_in_chunks(
    embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, chunk: int,
    check: Callable[[], None] | None = None,
) -> torch.Tensor:
    """``embed(images)`` computed ``chunk`` images at a time (same values, cache-sized passes); ``check``, where
    given, is called after every chunk (a site's time limit, which raises once time is up)."""
    parts = []
    for start in range(0, len(images), chunk):
        parts.append(embed(images[start : start + chunk]))
        if check is not None:
            check()
    return torch.cat(parts)


def deadline_after(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` value after which no new iteration starts (``None``: no limit).

    A soft stop, for benchmarks; a site's hard limit on a request is a ``deadline.Deadline``.
    """
    return None if seconds is None else time.monotonic() + seconds


def past(deadline: float | None) -> bool:
    """Whether the wall-time deadline has passed."""
    return deadline is not None and time.monotonic() >= deadline
