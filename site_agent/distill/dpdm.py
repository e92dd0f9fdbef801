"""Differentially private distribution matching (DP-MERF style; Harder et al., AISTATS 2021).

The mechanism, run once on the site's training images:

1. ``NUM_NETS`` untrained ConvNets and, for each, a fixed Gaussian projection of its embedding
   (``ConvNet.embed``) to ``PROJECTED_DIM`` dimensions, all drawn from the config's seed, with
   ``NUM_VIEWS`` DSA views (seeds drawn once from it too). An image's feature is the concatenation
   over the networks of its projected embedding averaged over the views, scaled to unit L2 norm:
   every image contributes a vector of norm at most 1 (the per-example clipping).
2. Per class ``c``: ``S_c = sum_i f_i + N(0, sigma^2 I)`` and ``T_c = 0.5 n_c + N(0, sigma^2)``. One
   image adds ``(f_i, 0.5)`` to exactly one class, so the whole release (every class's sum and count)
   is one Gaussian mechanism of L2 sensitivity ``sqrt(1 + 0.25)`` under adding or removing one image.
   ``sigma = z * sqrt(1.25)``, ``z`` the smallest noise multiplier that the PLD accountant
   (``accounting``) finds (epsilon, delta)-DP for one release.
3. Target of class ``c``: ``S_c / max(T_c / 0.5, 1)``. Which classes are distilled is decided from the
   noisy counts too (at least ``min_real_per_class``), and those counts are what the site releases.

Everything after step 2 is post-processing: the synthetic images (from noise; real init is refused)
are fitted by SGD so that their own mean feature per class, computed the same way, matches the
target. The noise comes from the operating system's entropy, never from the seed: a seed that
reproduced it would let anyone who knows the seed subtract it.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.augment import dsa
from shared.errors import ConfigError, DataError
from shared.methods import DistillMethod, DPDMConfig
from shared.models import ConvNet
from shared.training import chunk_size
from site_agent.distill.accounting import ACCOUNTANT, MECHANISM, DPRelease, noise_multiplier_for
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.loop import Iterations, seeded
from site_agent.distill.matching import Observer, embed_in_chunks, initial_images
from site_agent.distill.registry import register

log = logging.getLogger(__name__)

NUM_NETS = 8
PROJECTED_DIM = 32
NUM_VIEWS = 4
COUNT_WEIGHT = 0.5  # each image adds (f_i, 0.5): the count rides in the same Gaussian release
SENSITIVITY = math.sqrt(1.0 + COUNT_WEIGHT**2)

__all__ = ["DPDMConfig", "FeatureMap", "distill_dpdm", "noisy_class_statistics"]


class FeatureMap:
    """The clipped random feature of an image: (N, C, H, W) -> (N, NUM_NETS * PROJECTED_DIM), unit norm rows.

    Networks, projections and view seeds come from torch's global generator, which the caller seeds
    from the config seed (``loop.seeded``). A function of the image alone (instance norm keeps the
    images of a batch independent), differentiable in it.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, config: DPDMConfig,
                 device: torch.device) -> None:
        self.nets = [ConvNet(in_channels, num_classes, image_size, config.network).to(device).train().requires_grad_(False)
                     for _ in range(NUM_NETS)]
        dim = self.nets[0].classifier.in_features
        self.projections = [(torch.randn(dim, PROJECTED_DIM) / math.sqrt(PROJECTED_DIM)).to(device) for _ in self.nets]
        self.view_seeds = [int(s) for s in torch.randint(2**31, (NUM_VIEWS,))] if config.dsa else []
        self.width = config.network.width

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        views = [dsa(images, seed) for seed in self.view_seeds] or [images]
        parts = []
        for net, projection in zip(self.nets, self.projections, strict=True):
            embedded = torch.stack([net.embed(view) for view in views]).mean(dim=0)  # (N, D)
            parts.append(embedded @ projection)  # (N, PROJECTED_DIM)
        return F.normalize(torch.cat(parts, dim=1), dim=1)  # (N, NUM_NETS * PROJECTED_DIM), norm 1

    def without_grad(self, images: torch.Tensor, time_limit: Deadline = NO_LIMIT) -> torch.Tensor:
        """The features of many images, in cache-sized chunks (``time_limit`` checked after each), without autograd."""
        if len(images) == 0:
            return images.new_zeros((0, NUM_NETS * PROJECTED_DIM))
        with torch.no_grad():
            return embed_in_chunks(self, images, chunk_size(images, self.width), check=time_limit.check)


@dataclass(frozen=True)
class NoisyStatistics:
    """The one release of the mechanism: per class a noisy feature sum and a noisy count (in images)."""

    sums: torch.Tensor  # (K, F)
    counts: torch.Tensor  # (K,) noisy image counts (T_c / COUNT_WEIGHT), may be negative

    def targets(self) -> torch.Tensor:
        """Noisy mean feature per class (K, F): post-processing of the release."""
        return self.sums / self.counts.clamp(min=1.0).unsqueeze(1)


def noisy_class_statistics(features: list[torch.Tensor], sigma: float, noise: torch.Generator) -> NoisyStatistics:
    """Gaussian mechanism on per-class sums of clipped features and weighted counts.

    Args:
        features: per class, the (n_c, F) features of its images, each row of L2 norm at most 1.
        sigma: noise standard deviation, ``noise_multiplier * SENSITIVITY``.
        noise: the generator the noise is drawn from (OS-seeded outside tests).

    Returns:
        The noisy sums (K, F) and noisy counts (K,), on the CPU in float64.
    """
    rows = [f.detach().double().cpu() for f in features]
    assert all(len(f) == 0 or float(f.norm(dim=1).max()) <= 1 + 1e-6 for f in rows), "features are not clipped"
    sums = torch.stack([f.sum(dim=0) for f in rows])  # (K, F)
    weighted = torch.tensor([COUNT_WEIGHT * len(f) for f in rows], dtype=torch.float64)  # (K,)
    sums = sums + sigma * torch.randn(sums.shape, generator=noise, dtype=torch.float64)
    weighted = weighted + sigma * torch.randn(weighted.shape, generator=noise, dtype=torch.float64)
    return NoisyStatistics(sums, weighted / COUNT_WEIGHT)


def os_seeded_generator() -> torch.Generator:
    """A generator seeded from the operating system's entropy: the noise no seed reproduces."""
    return torch.Generator().manual_seed(secrets.randbits(63))


@register(DistillMethod.DPDM, matches_guide=False, private=True)
def distill_dpdm(
    real_by_class: dict[int, torch.Tensor],
    config: DPDMConfig,
    num_classes: int,
    device: torch.device,
    progress: bool = True,
    deadline: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_real_per_class: int = 1,
    time_limit: Deadline = NO_LIMIT,
) -> tuple[torch.Tensor, list[float], DPRelease]:
    """Release noisy class means of clipped random features once, then fit synthetic images to them.

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W) on ``device``, for EVERY class
            of the task (empty where the site has none): which classes are distilled is decided from
            the noisy counts, so that it is covered by the guarantee too.
        config: the DPDM settings, epsilon and delta included.
        num_classes: classes of the task (the throwaway ConvNets' classifier width).
        device: where the networks run.
        progress: show a progress bar.
        deadline: ``time.monotonic()`` after which no new iteration starts (``None``: no limit).
        observer: called with (iterations done, images) after every iteration.
        start_from: refused: a refinement round would touch the data again.
        min_real_per_class: classes whose NOISY count is below this are not distilled.
        time_limit: the site's hard limit on the request, checked while the real images' features are computed
            and before every iteration.

    Returns:
        Synthetic images (K * ipc, C, H, W) float32 on ``device``, class-major for the kept classes,
        the matching loss per iteration, and the release's DP record (kept classes, noisy counts).

    Raises:
        ConfigError: ``start_from`` given.
        DataError: no class's noisy count reaches ``min_real_per_class``.
        TimeLimitReached: ``time_limit`` passed first (nothing is released, so nothing is spent).
    """
    if start_from is not None:
        raise ConfigError("dpdm releases once: a refinement round would touch the site's images again outside "
                          "the privacy budget")
    streams = seeded(config.seed)
    first = next(iter(real_by_class.values()))
    in_channels, image_size = first.shape[1:3]
    features = FeatureMap(in_channels, num_classes, image_size, config, device)

    # The mechanism: the only place the real images are read.
    noise_multiplier = noise_multiplier_for(config.epsilon, config.delta)
    sigma = noise_multiplier * SENSITIVITY
    released = noisy_class_statistics([features.without_grad(images, time_limit) for images in real_by_class.values()],
                                      sigma, os_seeded_generator())
    noisy_counts = {c: max(0, round(float(n))) for c, n in zip(real_by_class, released.counts, strict=True)}
    log.info("dpdm: released noisy class statistics at epsilon %.3g, delta %.1e (noise multiplier %.3f, sigma %.3f)",
             config.epsilon, config.delta, noise_multiplier, sigma)

    # Post-processing from here on.
    kept = [k for k, c in enumerate(real_by_class) if noisy_counts[c] >= min_real_per_class]
    if not kept:
        raise DataError(f"no class has a noisy count of {min_real_per_class} local images or more to distill it")
    classes = [list(real_by_class)[k] for k in kept]
    targets = released.targets()[kept].float().to(device)  # (K, F)
    placeholder = {c: first.new_zeros((1, *first.shape[1:])) for c in classes}  # shape only: noise init
    syn = initial_images(placeholder, config.ipc, config.init, streams.gen).requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=config.lr_img, momentum=0.5)
    iterations = Iterations("DPDM", config.iterations, log=log, log_every=100,
                            describe=lambda loss: f"matching loss {loss:.4f}", images=syn.detach, progress=progress,
                            deadline=deadline, observer=observer, time_limit=time_limit)
    for iteration in iterations:
        means = features(syn).unflatten(0, (len(classes), config.ipc)).mean(dim=1)  # (K, F)
        loss = ((means - targets) ** 2).sum()
        opt_img.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        iterations.record(iteration, loss.item() / len(classes))
    record = DPRelease(epsilon=config.epsilon, delta=config.delta, noise_multiplier=noise_multiplier, sigma=sigma,
                       sensitivity=SENSITIVITY, mechanism=MECHANISM, accountant=ACCOUNTANT, classes=classes,
                       noisy_class_counts=noisy_counts)
    return syn.detach(), iterations.history, record
