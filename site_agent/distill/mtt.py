"""Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Experts are ConvNets trained on the real images with a checkpoint per epoch (``experts.py``; cached
locally). Each iteration picks an expert and a start epoch below ``max_start_epoch``; a student
starts from that checkpoint and takes ``syn_steps`` SGD steps on minibatches of the synthetic set,
with a learnable learning rate, inside the autograd graph (``torch.func.functional_call`` on the
flat parameter vector). The loss is how far the student ends from the expert's checkpoint
``expert_epochs`` later, relative to how far that checkpoint is from the start:
``||student_end - target||^2 / ||start - target||^2``. Its gradient moves the synthetic images
(SGD, momentum 0.5) and the learning rate (SGD, momentum 0.5). Synthetic minibatches get per-image
DSA inside the unrolled steps.

Stability: MTT's unrolled steps blow up easily when ``lr_img`` is too large. A non-finite loss or
gradient, a loss above ``_EXPLODE_FACTOR`` times the first one, or an invalid state (non-finite
images, non-positive learning rate) restores the last synthetic images and learning rate whose loss
was checked, halves ``lr_img`` and ``lr_lr`` and goes on; after ``_MAX_BACKOFFS`` back-offs it stops
early with that last good set. Non-finite images are never returned: :class:`DataError` instead.

ZCA (``zca=True``, as in the paper's CIFAR runs): whitening is fitted on the site's real images
(regularised with eps=0.1 like the paper's kornia call), experts are trained and images distilled in
the whitened space, and the result is un-whitened before it is returned. The released images are
therefore in the ordinary normalised pixel space that every other method releases and that the
coordinator trains on, and the whitening matrix (a statistic of the patients' images) never leaves
the site. The price: the coordinator's model sees the images unwhitened, not in the space they were
distilled in, so ZCA may help less here than in the paper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from shared.augment import dsa
from shared.errors import ConfigError, DataError
from shared.methods import DistillMethod, MTTConfig
from shared.models import ConvNet
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.experts import ExpertSettings, Trajectory, load_or_train_experts, unflatten_params
from site_agent.distill.loop import Iterations, seeded
from site_agent.distill.matching import Observer, starting_images
from site_agent.distill.registry import register

log = logging.getLogger(__name__)

__all__ = ["MTTConfig", "distill_mtt", "expert_settings"]

_EXPLODE_FACTOR = 10.0  # a loss this many times the first (or 1, if larger) counts as divergence
_MAX_BACKOFFS = 5  # halvings of lr_img before giving up and keeping the last good set
_ZCA_EPS = 0.1  # the paper's kornia ZCAWhitening(eps=0.1)
_ZCA_MAX_DIM = 4096  # C*H*W; the (D, D) eigendecomposition beyond this is too slow for a site CPU
_EXPERT_BATCH = 256  # the paper's batch_train for experts


def expert_settings(config: MTTConfig) -> ExpertSettings:
    """The expert recipe implied by an MTT config (plain SGD at ``lr_teacher``, the paper's buffer.py)."""
    return ExpertSettings(
        num_experts=config.num_experts,
        epochs=config.train_epochs_expert,
        lr=config.lr_teacher,
        batch_size=_EXPERT_BATCH,
        dsa=config.dsa,
        zca=config.zca,
        seed=config.seed,
        network=config.network,
    )


@register(DistillMethod.MTT, matches_guide=False, caches_experts=True)
def distill_mtt(
    real_by_class: dict[int, torch.Tensor],
    config: MTTConfig,
    num_classes: int,
    device: torch.device,
    progress: bool = True,
    expert_cache_dir: Path | None = None,
    deadline: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    time_limit: Deadline = NO_LIMIT,
) -> tuple[torch.Tensor, list[float]]:
    """Distill by matching expert training trajectories.

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W) on ``device``.
        config: the MTT settings.
        num_classes: classes of the task (the width of the ConvNet's classifier).
        device: where experts and students run.
        progress: show progress bars.
        expert_cache_dir: folder for cached expert trajectories; ``None`` trains them afresh.
        deadline: ``time.monotonic()`` after which no new iteration starts (``None``: no limit);
            expert training counts against it but is never cut short.
        observer: called with (accepted iterations, un-whitened images) after every accepted step.
        start_from: a refinement round's previous set (images, labels) in pixel space, the starting point.
        time_limit: the site's hard limit on the request, checked after every minibatch of expert training,
            before every iteration and after every unrolled student step.

    Returns:
        Synthetic images (K * ipc, C, H, W) float32 on ``device``, class-major in ``real_by_class``
        order, in normalised pixel space (un-whitened if ``zca``), and the loss of every accepted
        iteration.

    Raises:
        ConfigError: ``zca`` asked for images too large to whiten.
        DataError: no finite synthetic set could be produced.
        TimeLimitReached: ``time_limit`` passed first.
    """
    streams = seeded(config.seed)
    gen, rng = streams.gen, streams.rng
    classes = list(real_by_class)
    in_channels, image_size = next(iter(real_by_class.values())).shape[1:3]

    zca = _Zca.fit(real_by_class) if config.zca else None
    work = {c: zca.whiten(x) for c, x in real_by_class.items()} if zca else real_by_class
    trajectories = load_or_train_experts(work, num_classes, expert_settings(config), device, progress, expert_cache_dir,
                                         time_limit=time_limit)
    torch.manual_seed(config.seed)  # expert training moved the global RNG only on a cache miss

    net = ConvNet(in_channels, num_classes, image_size, config.network).to(device).train()
    if start_from is not None and zca is not None:
        start_from = (zca.whiten(start_from[0].to(device)), start_from[1])
    syn = starting_images(work, config.ipc, config.init, gen, start_from).requires_grad_(True)
    syn_labels = torch.tensor(classes, device=device).repeat_interleave(config.ipc)
    syn_lr = torch.tensor(config.lr_teacher, device=device).requires_grad_(True)
    backoff = _BackOff(syn, syn_lr, config.lr_img, config.lr_lr)
    iterations = Iterations(
        "MTT", config.iterations, log=log, log_every=50,
        describe=lambda loss: f"trajectory loss {loss:.4f}, synthetic lr {syn_lr.item():.4g}",
        images=lambda: zca.unwhiten(syn.detach()) if zca else syn.detach(),
        progress=progress, deadline=deadline, observer=observer, time_limit=time_limit,
    )

    for iteration in iterations:
        trajectory = trajectories[int(rng.integers(len(trajectories)))]
        start_epoch = int(rng.integers(config.max_start_epoch))
        problem = backoff.invalid_state()
        if problem is None:
            loss = _trajectory_loss(net, trajectory, start_epoch, syn, syn_labels, syn_lr, config, device, gen, rng,
                                    time_limit)
            problem = backoff.backward(loss)
        if problem is not None:
            if not backoff.retreat(iteration, problem):
                break
            continue
        value = loss.item()
        backoff.step(value)
        iterations.record(iteration, value)

    result = backoff.result()
    if zca is not None:
        result = zca.unwhiten(result)
    if not iterations.history or not torch.isfinite(result).all():
        raise DataError(
            "MTT could not produce a finite synthetic set",
            hint="lower lr_img, lr_lr or lr_teacher, or use fewer syn_steps",
        )
    return result.contiguous(), iterations.history


class _BackOff:
    """MTT's guard against divergence: the last sound state to return to, and step sizes halved on each failure.

    A state is sound when its images and learning rate are valid and its loss and gradients are
    finite and not exploding; only then is the optimisers' step taken from it.
    """

    def __init__(self, syn: torch.Tensor, syn_lr: torch.Tensor, lr_img: float, lr_lr: float) -> None:
        self.syn, self.syn_lr = syn, syn_lr
        self.lr_img, self.lr_lr = lr_img, lr_lr
        self.opt_img, self.opt_lr = _optimizers(syn, syn_lr, lr_img, lr_lr)
        self.good_syn, self.good_lr = syn.detach().clone(), syn_lr.detach().clone()
        self.reference: float | None = None  # the first kept loss (at least 1): what "exploded" is measured against
        self.count = 0

    def invalid_state(self) -> str | None:
        """Why the current images / learning rate cannot be used, or ``None``."""
        return _invalid_state(self.syn, self.syn_lr)

    def backward(self, loss: torch.Tensor) -> str | None:
        """Backpropagate ``loss`` unless it diverged; why this iteration must be undone, or ``None``."""
        problem = _bad_loss(loss.item(), self.reference)
        if problem is None:
            self.opt_img.zero_grad(set_to_none=True)
            self.opt_lr.zero_grad(set_to_none=True)
            loss.backward()
            if not (torch.isfinite(self.syn.grad).all() and torch.isfinite(self.syn_lr.grad).all()):
                problem = "non-finite gradient"
        return problem

    def step(self, loss: float) -> None:
        """The iteration was sound: keep its state as the one to return to, then take the optimisers' step."""
        self.good_syn.copy_(self.syn.detach())
        self.good_lr.copy_(self.syn_lr.detach())
        self.reference = max(loss, 1.0) if self.reference is None else self.reference
        self.opt_img.step()
        self.opt_lr.step()

    def retreat(self, iteration: int, problem: str) -> bool:
        """Restore the last sound state and halve the step sizes; ``False`` once out of back-offs (stop there)."""
        self.count += 1
        with torch.no_grad():
            self.syn.copy_(self.good_syn)
            self.syn_lr.copy_(self.good_lr)
        if self.count > _MAX_BACKOFFS:
            log.warning("MTT iteration %d: %s; stopping after %d back-offs with the last good set", iteration + 1,
                        problem, _MAX_BACKOFFS)
            return False
        self.lr_img, self.lr_lr = self.lr_img / 2, self.lr_lr / 2
        # Fresh optimisers: the momentum buffers hold the step that diverged.
        self.opt_img, self.opt_lr = _optimizers(self.syn, self.syn_lr, self.lr_img, self.lr_lr)
        log.warning("MTT iteration %d: %s; restored the last good set, lr_img -> %.4g (back-off %d/%d)",
                    iteration + 1, problem, self.lr_img, self.count, _MAX_BACKOFFS)
        return True

    def result(self) -> torch.Tensor:
        """The images to return: the current ones, or the last sound ones if the final step broke them."""
        current = self.syn.detach()
        if torch.isfinite(current).all():
            return current
        # The last step is never checked by a following loss.
        log.warning("MTT: the final step gave non-finite images; returning the last good set")
        return self.good_syn


def _optimizers(
    syn: torch.Tensor, syn_lr: torch.Tensor, lr_img: float, lr_lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """SGD with momentum 0.5 for the images and for the learnable learning rate, as in the paper."""
    return torch.optim.SGD([syn], lr=lr_img, momentum=0.5), torch.optim.SGD([syn_lr], lr=lr_lr, momentum=0.5)


def _invalid_state(syn: torch.Tensor, syn_lr: torch.Tensor) -> str | None:
    """Why the current images / learning rate cannot be used, or ``None``."""
    if not torch.isfinite(syn).all():
        return "non-finite synthetic images"
    if not (torch.isfinite(syn_lr) and syn_lr > 0):
        return f"synthetic learning rate {syn_lr.item():.4g} is not positive"
    return None


def _bad_loss(value: float, reference: float | None) -> str | None:
    """Why a loss means divergence, or ``None``."""
    if not np.isfinite(value):
        return "non-finite loss"
    if reference is not None and value > _EXPLODE_FACTOR * reference:
        return f"loss {value:.4g} exploded (first {reference:.4g})"
    return None


def _trajectory_loss(
    net: ConvNet,
    trajectory: Trajectory,
    start_epoch: int,
    syn: torch.Tensor,
    syn_labels: torch.Tensor,
    syn_lr: torch.Tensor,
    config: MTTConfig,
    device: torch.device,
    gen: torch.Generator,
    rng: np.random.Generator,
    time_limit: Deadline = NO_LIMIT,
) -> torch.Tensor:
    """||student_end - target||^2 / ||start - target||^2 after ``syn_steps`` unrolled steps from ``start``.

    Args:
        net: shape template for ``functional_call``; its own weights are not used.
        trajectory: one expert's flat parameter vectors (P,) per epoch.
        start_epoch: index of the starting checkpoint; the target is ``expert_epochs`` later.
        syn: synthetic images (K * ipc, C, H, W), requiring grad.
        syn_labels: their labels (K * ipc,).
        syn_lr: the learnable student learning rate, a scalar requiring grad.
        config: syn_steps, batch_syn, dsa and expert_epochs are read.
        device: where the student runs.
        gen: draws the minibatch order.
        rng: draws the DSA seeds.
        time_limit: checked after every unrolled step.

    Returns:
        The scalar loss, with a graph to ``syn`` and ``syn_lr``.
    """
    start = trajectory[start_epoch].to(device)
    target = trajectory[start_epoch + config.expert_epochs].to(device)
    batch = config.batch_syn or len(syn)
    student = start.clone().requires_grad_(True)
    order = torch.empty(0, dtype=torch.int64)
    for _ in range(config.syn_steps):
        if len(order) == 0:  # walk through a permutation, as the paper does, refilling when spent
            order = torch.randperm(len(syn), generator=gen)
        idx, order = order[:batch].to(device), order[batch:]
        x = syn[idx]
        if config.dsa:
            x = dsa(x, int(rng.integers(2**31)), per_sample=True)
        logits = functional_call(net, unflatten_params(net, student), (x,))
        ce = F.cross_entropy(logits, syn_labels[idx])
        (grad,) = torch.autograd.grad(ce, student, create_graph=True)
        student = student - syn_lr * grad
        time_limit.check()
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()


@dataclass(frozen=True)
class _Zca:
    """ZCA whitening of flattened images (D = C*H*W), fitted on one site's real images."""

    mean: torch.Tensor  # (D,)
    whiten_mat: torch.Tensor  # (D, D), symmetric
    unwhiten_mat: torch.Tensor  # (D, D), its inverse

    @classmethod
    def fit(cls, real_by_class: dict[int, torch.Tensor]) -> _Zca:
        """Fit on all classes' images together (float64 on the CPU, for a stable eigendecomposition).

        Raises:
            ConfigError: the images have more than ``_ZCA_MAX_DIM`` values each.
        """
        first = next(iter(real_by_class.values()))
        dim = first[0].numel()
        if dim > _ZCA_MAX_DIM:
            raise ConfigError(f"zca=True needs images of at most {_ZCA_MAX_DIM} values, got {dim}")
        x = torch.cat([v.detach().flatten(1).cpu().double() for v in real_by_class.values()])  # (N, D)
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / max(len(x) - 1, 1)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        eigvals = eigvals.clamp(min=0) + _ZCA_EPS  # eps also makes a rank-deficient covariance invertible
        whiten = eigvecs @ torch.diag(eigvals.rsqrt()) @ eigvecs.T
        unwhiten = eigvecs @ torch.diag(eigvals.sqrt()) @ eigvecs.T
        device, dtype = first.device, first.dtype
        return cls(mean.to(device, dtype), whiten.to(device, dtype), unwhiten.to(device, dtype))

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> whitened images of the same shape."""
        return ((x.flatten(1) - self.mean) @ self.whiten_mat).view_as(x)

    def unwhiten(self, z: torch.Tensor) -> torch.Tensor:
        """Whitened images (N, C, H, W) -> images in the original pixel space."""
        return (z.flatten(1) @ self.unwhiten_mat + self.mean).view_as(z)
