"""Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised ConvNet and uses its feature extractor
(``ConvNet.embed``) untrained, as a random embedding. For every class the synthetic images are moved
so that their mean embedding matches the mean embedding of a batch of real images of that class
(squared L2 distance of the means, summed over classes). With DSA, the real and the synthetic batch
of a class get the same random augmentation (Siamese), a fresh one per class and iteration.

DM's cost is the embeddings, so all classes' real batches go through the network in one forward
pass (without autograd, in cache-sized chunks on a CPU) and all synthetic images in another; the ConvNet's instance norm keeps each
image's features independent of the rest of its batch, so batching changes nothing but speed.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from shared.augment import dsa
from shared.methods import DistillMethod, DMConfig, EmbeddingMatch, IDMConfig
from shared.models import ConvNet
from shared.training import chunk_size
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.loop import Iterations, seeded
from site_agent.distill.matching import Observer, embed_in_chunks, sample_batch, starting_images
from site_agent.distill.registry import register

log = logging.getLogger(__name__)

__all__ = ["DMConfig", "distill_dm", "matching_loss"]

_MMD_SCALES = (1.0, 4.0, 16.0)  # kernel bandwidths, in median squared distances


@register(DistillMethod.DM)
def distill_dm(
    real_by_class: dict[int, torch.Tensor],
    config: DMConfig,
    num_classes: int,
    device: torch.device,
    progress: bool = True,
    deadline: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: ConvNet | None = None,
    time_limit: Deadline = NO_LIMIT,
) -> tuple[torch.Tensor, list[float]]:
    """Distill by matching mean random embeddings of real and synthetic images, class by class.

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W) on ``device``.
        config: the DM settings.
        num_classes: classes of the task (the width of the throwaway ConvNet's classifier).
        device: where the networks run.
        progress: show a progress bar.
        deadline: ``time.monotonic()`` after which no new iteration starts (``None``: no limit).
        observer: called with (iterations done, images) after every iteration.
        start_from: a refinement round's previous set (images, labels), the starting point.
        guide: a refinement round's global model, whose embedding replaces the random one on every
            other iteration (FedDM's matching against the global model).
        time_limit: the site's hard limit on the request, checked before every iteration.

    Returns:
        Synthetic images (K * ipc, C, H, W) float32 on ``device``, class-major in ``real_by_class``
        order, and the matching loss per iteration (mean over classes).
    """
    streams = seeded(config.seed)
    gen, aug_rng = streams.gen, streams.rng
    classes = list(real_by_class)
    in_channels, image_size = next(iter(real_by_class.values())).shape[1:3]

    syn = starting_images(real_by_class, config.ipc, config.init, gen, start_from).requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=config.lr_img, momentum=0.5)
    iterations = Iterations("DM", config.iterations, log=log, log_every=100,
                            describe=lambda loss: f"matching loss {loss:.4f}", images=syn.detach, progress=progress,
                            deadline=deadline, observer=observer, time_limit=time_limit)

    for iteration in iterations:
        if guide is not None and iteration % 2:
            net = guide
        else:
            net = ConvNet(in_channels, num_classes, image_size, config.network).to(device).train()
        net.requires_grad_(False)  # only the images learn; skip the weights' gradients
        loss = matching_loss(net, real_by_class, syn, config, gen, aug_rng)
        opt_img.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        iterations.record(iteration, loss.item() / len(classes))
    return syn.detach(), iterations.history


def matching_loss(
    net: ConvNet,
    real_by_class: dict[int, torch.Tensor],
    syn: torch.Tensor,
    config: DMConfig | IDMConfig,
    gen: torch.Generator,
    aug_rng: np.random.Generator,
) -> torch.Tensor:
    """Sum over classes of ||mean embed(real_c) - mean embed(syn_c)||^2 (``match`` mean), or of their
    squared Gaussian MMD (``match`` mmd), as a scalar with a graph to ``syn``.

    Args:
        net: the random network whose ``embed`` is the feature map.
        real_by_class: class id -> real images (n_c, C, H, W).
        syn: all synthetic images (K * ipc, C, H, W), class-major, requiring grad.
        config: ipc, batch_real, dsa and match are read.
        gen: draws the real batches.
        aug_rng: draws one DSA seed per class, shared by its real and synthetic batch.
    """
    reals, fakes = [], []
    for k, images in enumerate(real_by_class.values()):
        real = sample_batch(images, config.batch_real, gen)
        fake = syn[k * config.ipc : (k + 1) * config.ipc]
        if config.dsa:
            seed = int(aug_rng.integers(2**31))
            real, fake = dsa(real, seed), dsa(fake, seed)
        reals.append(real)
        fakes.append(fake)
    with torch.no_grad():
        # Every class's real batch in cache-sized chunks; split back by class sizes.
        all_real = torch.cat(reals)
        real_embed = embed_in_chunks(net.embed, all_real, chunk_size(all_real, net.width)).split([len(r) for r in reals])
    syn_embed = net.embed(torch.cat(fakes)).unflatten(0, (len(fakes), config.ipc))  # (K, ipc, D)
    if config.match == EmbeddingMatch.MMD:
        return torch.stack([gaussian_mmd2(real, fake) for real, fake in zip(real_embed, syn_embed, strict=True)]).sum()
    real_means = torch.stack([e.mean(dim=0) for e in real_embed])  # (K, D)
    return ((real_means - syn_embed.mean(dim=1)) ** 2).sum()


def gaussian_mmd2(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Squared MMD between embeddings real (n, D) and fake (m, D) under Gaussian kernels, on DM's scale.

    Kernels at 1, 4 and 16 times the median squared distance between all n + m points (detached);
    each MMD is multiplied by half its bandwidth, which for a wide kernel tends to DM's loss (the
    squared distance of the means), so DM's image learning rate still fits and images far from the
    real ones still get a gradient. Unlike the mean, the narrower kernels' fake-fake term pushes a
    class's synthetic images apart, which noise-initialised images need to stay diverse.
    """
    joint = torch.cat([real, fake])
    squared = joint.pow(2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * joint @ joint.T).clamp_min(0)
    off_diagonal = ~torch.eye(len(joint), dtype=torch.bool, device=joint.device)
    median = distances.detach()[off_diagonal].median().clamp_min(1e-12)
    n = len(real)
    total = joint.new_zeros(())
    for scale in _MMD_SCALES:
        kernel = torch.exp(-distances / (scale * median))
        mmd2 = (_mean_off_diagonal(kernel[:n, :n]) + _mean_off_diagonal(kernel[n:, n:])
                - 2 * kernel[:n, n:].mean())
        total = total + scale * median / 2 * mmd2
    return total / len(_MMD_SCALES)


def _mean_off_diagonal(kernel: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of distinct points (the unbiased estimate): a point's kernel with itself is always 1."""
    m = len(kernel)
    return (kernel.sum() - kernel.diagonal().sum()) / max(m * (m - 1), 1)
