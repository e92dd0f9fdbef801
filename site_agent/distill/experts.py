"""Expert trajectories for MTT: ConvNets trained on a site's real images, with a checkpoint per epoch.

A trajectory is a list of ``epochs + 1`` flat parameter vectors (1-D float32, on the CPU): the
parameters at initialisation and after each epoch, in ``ConvNet.parameters()`` order. Experts
follow the paper's ``buffer.py``: plain SGD with no momentum and no weight decay (a smooth, short
path is easier to match from a few synthetic steps), batch 256, per-image DSA.

Trajectories are derived from patient images and are as sensitive as a model trained on them: they
stay at the site, in a local cache, and are only returned to the caller, never put in a bundle.
The cache key is a SHA-256 of the real images' bytes, their labels and every expert setting, so a
changed dataset or setting trains new experts instead of reusing stale ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.errors import DataError
from shared.methods import NetworkSpec
from shared.models import ConvNet
from shared.training import sgd_epoch
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.loop import seeded

log = logging.getLogger(__name__)

__all__ = [
    "ExpertSettings",
    "Trajectory",
    "expert_fingerprint",
    "flat_params",
    "load_or_train_experts",
    "train_experts",
    "unflatten_params",
]

Trajectory = list[torch.Tensor]  # epochs + 1 flat parameter vectors (P,), CPU float32

# Bump when the trajectory format or the training recipe changes: old cache files then stop matching.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ExpertSettings:
    """How experts are trained; every field is part of the cache key."""

    num_experts: int = 5
    epochs: int = 15
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.0  # the paper's buffer.py: no momentum
    weight_decay: float = 0.0  # the paper's buffer.py: no weight decay
    dsa: bool = True
    zca: bool = False  # recorded only: the caller whitens the images it passes in
    seed: int = 0
    network: NetworkSpec = field(default_factory=NetworkSpec)

    def as_json(self) -> str:
        """A canonical JSON text of the settings (sorted keys), for hashing."""
        values = dataclasses.asdict(self)
        values["network"] = self.network.model_dump(mode="json")
        return json.dumps(values, sort_keys=True)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """The model's parameters as one detached 1-D float32 CPU vector (P,)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


def unflatten_params(model: torch.nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of ``flat`` (P,) shaped as the model's named parameters, for ``torch.func.functional_call``.

    The views keep ``flat``'s autograd graph, so gradients flow back to the flat vector.
    """
    shapes = [(name, p.shape, p.numel()) for name, p in model.named_parameters()]
    total = sum(n for _, _, n in shapes)
    if flat.numel() != total:
        raise ValueError(f"flat parameter vector has {flat.numel()} values, the model needs {total}")
    chunks = flat.split([n for _, _, n in shapes])
    return {name: chunk.view(shape) for (name, shape, _), chunk in zip(shapes, chunks, strict=True)}


def expert_fingerprint(real_by_class: dict[int, torch.Tensor], num_classes: int, settings: ExpertSettings) -> str:
    """SHA-256 hex of the real images, their labels, ``num_classes`` and every expert setting."""
    h = hashlib.sha256()
    h.update(f"feddistill-experts-v{_CACHE_FORMAT};classes={num_classes};".encode())
    h.update(settings.as_json().encode())
    for cls, images in real_by_class.items():
        array = np.ascontiguousarray(images.detach().cpu().numpy())
        h.update(f";class={cls};shape={tuple(array.shape)};dtype={array.dtype};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def train_experts(
    real_by_class: dict[int, torch.Tensor],
    num_classes: int,
    settings: ExpertSettings,
    device: torch.device,
    progress: bool = True,
    time_limit: Deadline = NO_LIMIT,
) -> list[Trajectory]:
    """Train ``settings.num_experts`` ConvNets on the real images, keeping the parameters of every epoch.

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W); the class id is the label.
        num_classes: width of the classifier.
        settings: the expert recipe.
        device: where the experts train.
        progress: show a progress bar over experts.
        time_limit: the site's hard limit on the request, checked after every minibatch step.

    Returns:
        ``num_experts`` trajectories, each ``epochs + 1`` flat parameter vectors (P,) on the CPU.

    Raises:
        DataError: an expert's training loss became non-finite (lower the teacher learning rate).
        TimeLimitReached: ``time_limit`` passed before the experts were trained (none is cached).
    """
    images = torch.cat(list(real_by_class.values())).to(device)
    labels = torch.cat([torch.full((len(x),), cls, dtype=torch.int64) for cls, x in real_by_class.items()]).to(device)
    in_channels, image_size = images.shape[1:3]
    trajectories: list[Trajectory] = []
    for expert in tqdm(range(settings.num_experts), desc="MTT experts", disable=not progress, leave=False):
        # A seed per expert: experts differ, yet a rebuild reproduces the same set.
        streams = seeded(settings.seed * 100_003 + expert)
        net = ConvNet(in_channels, num_classes, image_size, settings.network).to(device).train()
        optimizer = torch.optim.SGD(
            net.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        trajectory = [flat_params(net)]
        for epoch in range(settings.epochs):
            total = sgd_epoch(net, optimizer, images, labels, settings.batch_size, settings.dsa, streams.gen,
                              streams.rng, check=time_limit.check)
            if not np.isfinite(total):
                raise DataError(
                    f"MTT expert {expert} diverged in epoch {epoch + 1} at lr_teacher={settings.lr}",
                    hint="lower lr_teacher",
                )
            trajectory.append(flat_params(net))
        log.info("MTT expert %d/%d trained: last epoch loss %.4f", expert + 1, settings.num_experts, total)
        trajectories.append(trajectory)
    return trajectories


def load_or_train_experts(
    real_by_class: dict[int, torch.Tensor],
    num_classes: int,
    settings: ExpertSettings,
    device: torch.device,
    progress: bool = True,
    cache_dir: Path | None = None,
    time_limit: Deadline = NO_LIMIT,
) -> list[Trajectory]:
    """Expert trajectories from ``cache_dir/<fingerprint>.pt`` when present, else trained (and cached).

    Args:
        real_by_class: class id -> normalised real images (n_c, C, H, W).
        num_classes: width of the classifier.
        settings: the expert recipe; part of the cache key.
        device: where experts train on a cache miss.
        progress: show a progress bar while training.
        cache_dir: folder of cached trajectories; ``None`` trains without caching.
        time_limit: the site's hard limit on the request, checked while training (a cache hit costs no time).

    Returns:
        ``num_experts`` trajectories of ``epochs + 1`` flat CPU vectors each.
    """
    if cache_dir is None:
        return train_experts(real_by_class, num_classes, settings, device, progress, time_limit)
    key = expert_fingerprint(real_by_class, num_classes, settings)
    path = Path(cache_dir) / f"{key}.pt"
    cached = _read_cache(path, settings)
    if cached is not None:
        log.info("MTT experts: reusing %d cached trajectories (key %s)", len(cached), key[:12])
        return cached
    log.info("MTT experts: no cache for key %s, training %d experts", key[:12], settings.num_experts)
    trajectories = train_experts(real_by_class, num_classes, settings, device, progress, time_limit)
    _write_cache(path, trajectories)
    return trajectories


def _read_cache(path: Path, settings: ExpertSettings) -> list[Trajectory] | None:
    """The trajectories stored at ``path``, or ``None`` when missing, unreadable or of the wrong shape."""
    if not path.is_file():
        return None
    try:
        # weights_only: a cache file is data, never code to unpickle.
        trajectories = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        log.warning("MTT experts: cache file unreadable (%s), rebuilding", type(exc).__name__)
        return None
    ok = (
        isinstance(trajectories, list)
        and len(trajectories) == settings.num_experts
        and all(isinstance(t, list) and len(t) == settings.epochs + 1 for t in trajectories)
        and all(isinstance(p, torch.Tensor) and p.dim() == 1 for t in trajectories for p in t)
    )
    if not ok:
        log.warning("MTT experts: cache file does not match the settings, rebuilding")
        return None
    return trajectories


def _write_cache(path: Path, trajectories: list[Trajectory]) -> None:
    """Save atomically: a crash mid-write leaves no half file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(trajectories, tmp)
    os.replace(tmp, path)
