"""Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

Each iteration draws a fresh randomly initialised ConvNet. In each of ``outer_loop`` steps the
synthetic images of every class are moved so that the network's gradient on them matches its
gradient on a batch of real images of that class (layer-wise cosine distance); then the network
takes ``inner_loop`` SGD steps on the current synthetic set, so that later steps match gradients
along a training trajectory. With DSA, real and synthetic batches of a class get the same random
augmentation before each match.

Where the time goes on a CPU: the real batches' forward/backward passes (``batch_real`` images per
class per outer step) and the inner loop's SGD steps. Both run in cache-sized chunks
(:func:`shared.training.mean_loss_gradients`, :func:`shared.training.sgd_epoch`), which computes the same gradients as
one big batch, faster; on a GPU a chunk is the whole batch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from shared.augment import dsa
from shared.methods import DCConfig, DistillMethod
from shared.models import ConvNet
from shared.training import chunk_size, mean_loss_gradients, sgd_epoch
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.loop import Iterations, seeded
from site_agent.distill.matching import Observer, gradient_distance, sample_batch, starting_images
from site_agent.distill.registry import register

log = logging.getLogger(__name__)

# (outer_loop, inner_loop) by images per class, from the paper's code.
_PAPER_LOOPS = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 10), (40, 40, 20), (50, 50, 10))
_SYN_BATCH = 256


def paper_loops(ipc: int) -> tuple[int, int]:
    """The paper's (outer_loop, inner_loop) for the smallest listed IPC at or above ``ipc``."""
    for limit, outer, inner in _PAPER_LOOPS:
        if ipc <= limit:
            return outer, inner
    return _PAPER_LOOPS[-1][1:]


@register(DistillMethod.DC)
def distill_dc(
    real_by_class: dict[int, torch.Tensor],
    config: DCConfig,
    num_classes: int,
    device: torch.device,
    progress: bool = True,
    deadline: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: ConvNet | None = None,
    time_limit: Deadline = NO_LIMIT,
) -> tuple[torch.Tensor, list[float]]:
    """Synthetic images (K * ipc, C, H, W), class-major in ``real_by_class`` order, and the loss per iteration.

    Stops early, after a whole iteration, once ``deadline`` (``time.monotonic()``) has passed; raises
    :class:`shared.errors.TimeLimitReached` once ``time_limit`` has, checked after every class's gradient
    match and every inner-loop step, so that a costly iteration cannot overrun it. In a refinement round it starts from ``start_from`` (the previous set) and, on every other iteration,
    matches gradients along a trajectory that starts at the global model ``guide`` instead of a
    random network.
    """
    streams = seeded(config.seed)
    gen, aug_rng = streams.gen, streams.rng
    classes = list(real_by_class)
    in_channels, image_size = next(iter(real_by_class.values())).shape[1:3]
    outer_loop, inner_loop = paper_loops(config.ipc)
    outer_loop, inner_loop = config.outer_loop or outer_loop, config.inner_loop or inner_loop

    syn = starting_images(real_by_class, config.ipc, config.init, gen, start_from).requires_grad_(True)
    syn_labels = torch.tensor(classes, device=device).repeat_interleave(config.ipc)
    opt_img = torch.optim.SGD([syn], lr=config.lr_img, momentum=0.5)
    iterations = Iterations("DC", config.iterations, log=log, log_every=10,
                            describe=lambda loss: f"matching loss {loss:.4f}", images=syn.detach, progress=progress,
                            deadline=deadline, observer=observer, time_limit=time_limit)

    width = config.network.width
    for iteration in iterations:
        net = ConvNet(in_channels, num_classes, image_size, config.network).to(device).train()
        if guide is not None and iteration % 2:
            net.load_state_dict(guide.state_dict())
        params = list(net.parameters())
        opt_net = torch.optim.SGD(params, lr=config.lr_net)
        iteration_loss = 0.0
        for step in range(outer_loop):
            loss = syn.new_zeros(())
            for k, cls in enumerate(classes):
                real = sample_batch(real_by_class[cls], config.batch_real, gen)
                fake = syn[k * config.ipc : (k + 1) * config.ipc]
                if config.dsa:
                    seed = int(aug_rng.integers(2**31))
                    real, fake = dsa(real, seed), dsa(fake, seed)
                target = torch.full((len(real),), cls, device=device)
                g_real, _ = mean_loss_gradients(net, params, real, target, chunk_size(real, width))
                g_fake = torch.autograd.grad(F.cross_entropy(net(fake), target[: len(fake)]), params, create_graph=True)
                loss = loss + gradient_distance(g_fake, g_real)
                time_limit.check()
            opt_img.zero_grad(set_to_none=True)
            (syn.grad,) = torch.autograd.grad(loss, [syn])
            opt_img.step()
            iteration_loss += loss.item()
            if step == outer_loop - 1:
                break
            _train_on_synthetic(net, opt_net, syn.detach(), syn_labels, inner_loop, config.dsa, gen, aug_rng,
                                time_limit)
        iterations.record(iteration, iteration_loss / outer_loop)
    return syn.detach(), iterations.history


def _train_on_synthetic(
    net: ConvNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    augment: bool,
    gen: torch.Generator,
    aug_rng: np.random.Generator,
    time_limit: Deadline = NO_LIMIT,
) -> None:
    """The inner loop: ``epochs`` passes of SGD on the (detached) synthetic set, checking ``time_limit`` each step."""
    for _ in range(epochs):
        sgd_epoch(net, optimizer, images, labels, _SYN_BATCH, augment, gen, aug_rng, check=time_limit.check)
