"""Improved Distribution Matching (Zhao, Li, Qin & Yu, CVPR 2023), as a CPU site can afford it.

DM matches class-mean embeddings under fresh random networks, which see nothing of the data. IDM
keeps a small queue of networks that are partly trained on the site's real images, so the
embeddings it matches are more discriminative:

- every ``new_model_every`` iterations a freshly initialised ConvNet joins the queue and, once the
  queue holds ``queue_size``, the oldest leaves (so the queue spans networks at different stages);
- each iteration one network is drawn from the queue; the synthetic images move to match the
  mean embedding of a real batch, class by class (DM's loss, with the same Siamese DSA), plus
  ``ce_weight`` times the cross-entropy of the synthetic images under that network, weighted by the
  network's running accuracy on real data (the paper's class-aware regularisation: a network that
  has learned nothing yet says nothing about classes);
- then ``models_trained`` networks drawn from the queue take ``train_steps`` SGD steps each on real
  batches of mixed classes.

Everything about the real images stays inside the site; only the synthetic set is released.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.augment import dsa
from shared.methods import DistillMethod, IDMConfig
from shared.models import ConvNet
from shared.training import chunk_size, mean_loss_gradients
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.dm import matching_loss
from site_agent.distill.loop import Iterations, seeded
from site_agent.distill.matching import Observer, starting_images
from site_agent.distill.registry import register

log = logging.getLogger(__name__)

__all__ = ["IDMConfig", "distill_idm"]

_ACCURACY_MOMENTUM = 0.9  # running accuracy of a queued network over its recent real batches


@dataclass
class _Queued:
    """A network in the queue, its optimiser, and how well it classifies the real batches it trains on."""

    net: ConvNet
    optimizer: torch.optim.Optimizer
    accuracy: float = 0.0


@register(DistillMethod.IDM)
def distill_idm(
    real_by_class: dict[int, torch.Tensor],
    config: IDMConfig,
    num_classes: int,
    device: torch.device,
    progress: bool = True,
    deadline: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: ConvNet | None = None,
    time_limit: Deadline = NO_LIMIT,
) -> tuple[torch.Tensor, list[float]]:
    """Distill by matching mean embeddings under a queue of partly trained networks.

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W) on ``device``.
        config: the IDM settings.
        num_classes: classes of the task (the width of the networks' classifiers).
        device: where the networks run.
        progress: show a progress bar.
        deadline: ``time.monotonic()`` after which no new iteration starts (``None``: no limit).
        observer: called with (iterations done, images) after every iteration.
        start_from: a refinement round's previous set (images, labels), the starting point.
        guide: a refinement round's global model; drawn in place of a queued network every other
            iteration, with full weight on the class-aware term (it was trained on every site's sets).
        time_limit: the site's hard limit on the request, checked before every iteration and after every
            training step of a queued network.

    Returns:
        Synthetic images (K * ipc, C, H, W) float32 on ``device``, class-major in ``real_by_class``
        order, and the loss per iteration (mean over classes).
    """
    streams = seeded(config.seed)
    gen, aug_rng = streams.gen, streams.rng
    pick_rng = np.random.default_rng(config.seed + 1)
    classes = list(real_by_class)
    in_channels, image_size = next(iter(real_by_class.values())).shape[1:3]
    all_real = torch.cat(list(real_by_class.values()))  # (N, C, H, W), for the queue's training batches
    all_labels = torch.cat([torch.full((len(x),), c, device=device) for c, x in real_by_class.items()])

    syn = starting_images(real_by_class, config.ipc, config.init, gen, start_from).requires_grad_(True)
    syn_labels = torch.tensor(classes, device=device).repeat_interleave(config.ipc)
    opt_img = torch.optim.SGD([syn], lr=config.lr_img, momentum=0.5)
    queue: deque[_Queued] = deque(maxlen=config.queue_size)
    iterations = Iterations("IDM", config.iterations, log=log, log_every=100,
                            describe=lambda loss: f"loss {loss:.4f} (queue of {len(queue)})", images=syn.detach,
                            progress=progress, deadline=deadline, observer=observer, time_limit=time_limit)

    def new_network() -> _Queued:
        net = ConvNet(in_channels, num_classes, image_size, config.network).to(device).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=config.lr_net, momentum=0.9, weight_decay=5e-4)
        return _Queued(net, optimizer)

    for iteration in iterations:
        if iteration % config.new_model_every == 0:
            queue.append(new_network())
        if guide is not None and iteration % 2:
            net, weight = guide, 1.0
        else:
            drawn = queue[int(pick_rng.integers(len(queue)))]
            net, weight = drawn.net, drawn.accuracy
        net.requires_grad_(False)  # only the images learn here
        loss = matching_loss(net, real_by_class, syn, config, gen, aug_rng)
        if config.ce_weight and weight:
            fake = dsa(syn, int(aug_rng.integers(2**31)), per_sample=True) if config.dsa else syn
            loss = loss + config.ce_weight * weight * F.cross_entropy(net(fake), syn_labels) * len(classes)
        opt_img.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        net.requires_grad_(True)
        for _ in range(min(config.models_trained, len(queue))):
            _train_on_real(queue[int(pick_rng.integers(len(queue)))], all_real, all_labels, config, gen, time_limit)
        iterations.record(iteration, loss.item() / len(classes))
    return syn.detach(), iterations.history


def _train_on_real(
    queued: _Queued, images: torch.Tensor, labels: torch.Tensor, config: IDMConfig, gen: torch.Generator,
    time_limit: Deadline = NO_LIMIT,
) -> None:
    """``train_steps`` SGD steps of a queued network on random real batches; updates its running accuracy.

    Raises:
        TimeLimitReached: ``time_limit`` passed after a step.
    """
    net = queued.net.train()
    params = list(net.parameters())
    for _ in range(config.train_steps):
        idx = torch.randint(len(images), (min(config.train_batch, len(images)),), generator=gen).to(images.device)
        batch, target = images[idx], labels[idx]
        grads, _ = mean_loss_gradients(net, params, batch, target, chunk_size(batch, net.width))
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        queued.optimizer.step()
        time_limit.check()
    with torch.no_grad():  # on the last batch, after the steps: what the network knows now
        correct = float((net(batch).argmax(1) == target).float().mean())
    queued.accuracy = _ACCURACY_MOMENTUM * queued.accuracy + (1 - _ACCURACY_MOMENTUM) * correct
