"""Pieces shared by the distillation methods: real-batch sampling, initialisation, gradient distance,
cache-sized chunks, and the wall-time deadline a site's policy may set."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from shared.schemas import InitMode

# A chunk whose widest activation holds about this many floats (16 MiB) stays in a server CPU's
# last-level cache. On the reference CPU, a ConvNet-128 gradient over 256 RGB 32x32 images took
# 1.3 s in one batch and 0.7-0.8 s in chunks of 32 (docs/benchmarks.md).
_CPU_CHUNK_FLOATS = 4 * 2**20
_MIN_CHUNK = 8  # below this, per-call overhead costs more than the cache saves

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

    ``NOISE`` draws standard normal pixels. ``REAL`` starts from randomly chosen local images: the
    release then begins as a copy of patients' images, which is why a site must opt in to it.
    """
    first = next(iter(real_by_class.values()))
    shape = (len(real_by_class) * ipc, *first.shape[1:])
    if init == InitMode.NOISE:
        return torch.randn(shape, generator=gen).to(first.device)
    picks = []
    for images in real_by_class.values():
        idx = torch.randint(len(images), (ipc,), generator=gen) if len(images) < ipc else torch.randperm(len(images), generator=gen)[:ipc]
        picks.append(images[idx.to(images.device)])
    return torch.cat(picks).clone()


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


def chunk_size(images: torch.Tensor, width: int) -> int:
    """Images per forward pass: the whole batch on an accelerator, a cache-sized chunk on a CPU.

    ``width`` is the network's channel count, so ``width * H * W`` floats is one image's widest
    activation (the first conv block's output).
    """
    if images.device.type != "cpu":
        return max(1, len(images))
    return max(_MIN_CHUNK, _CPU_CHUNK_FLOATS // (width * images.shape[-2] * images.shape[-1]))


def mean_loss_gradients(
    net: torch.nn.Module,
    params: list[torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy over ``images``, summed chunk by chunk.

    The same sum as one big batch (up to float rounding) because every image's loss depends on that
    image alone (instance norm), with a working set that fits in cache.
    """
    total: list[torch.Tensor] | None = None
    for start in range(0, len(images), chunk):
        logits = net(images[start : start + chunk])
        loss = F.cross_entropy(logits, labels[start : start + chunk], reduction="sum") / len(images)
        grads = torch.autograd.grad(loss, params)
        total = list(grads) if total is None else [t.add_(g) for t, g in zip(total, grads, strict=True)]
    assert total is not None, "mean_loss_gradients needs at least one image"
    return total


def embed_in_chunks(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, chunk: int) -> torch.Tensor:
    """``embed(images)`` computed ``chunk`` images at a time (same values, cache-sized passes)."""
    return torch.cat([embed(images[start : start + chunk]) for start in range(0, len(images), chunk)])


def deadline_after(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` value at which a distillation must stop (``None``: no limit)."""
    return None if seconds is None else time.monotonic() + seconds


def past(deadline: float | None) -> bool:
    """Whether the wall-time deadline has passed."""
    return deadline is not None and time.monotonic() >= deadline
