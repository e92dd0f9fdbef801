"""Distillation: a site's real images in, a small synthetic set out, behind one function.

``distill(train, num_classes, config, device, progress)`` runs the method the config names (see
``registry``). Only classes with at least ``min_real_per_class`` local images are distilled: a class
learned from one or two patients would be close to a copy of them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from shared.errors import DataError
from shared.methods import DistillConfig, SoftLabelSpec
from shared.models import ConvNet
from site_agent.distill.accounting import DPRelease
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.matching import Observer, deadline_after, past
from site_agent.distill.registry import method_for
from site_agent.distill.teacher import soft_labels as teacher_labels
from site_agent.distill.teacher import train_teacher
from site_agent.labelled import LabelledImages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticSet:
    """A distilled set: images (N, C, H, W) float32 and labels (N,) int64, both on the CPU, and, when the site
    labels it with a teacher, soft labels (N, K) float32 and how they were made."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[int]
    config: DistillConfig
    loss_history: list[float]  # one value per iteration run (MTT: per accepted iteration)
    seconds: float
    stopped_early: bool = False  # the caller's soft ``max_seconds`` ended it before ``config.iterations``
    dp: DPRelease | None = None  # a differentially private method's guarantee and noisy class counts
    soft_labels: torch.Tensor | None = None
    label_spec: SoftLabelSpec | None = None

    @property
    def targets(self) -> torch.Tensor:
        """What a model learns from this set: the soft labels where there are some, else the labels."""
        return self.labels if self.soft_labels is None else self.soft_labels

    def only(self, keep: torch.Tensor) -> SyntheticSet:
        """The set with only the images ``keep`` (N,) bool marks, their labels and soft labels; a class left with no
        image is no longer among its classes."""
        labels = self.labels[keep]
        return replace(self, images=self.images[keep], labels=labels,
                       classes=[c for c in self.classes if bool((labels == c).any())],
                       soft_labels=None if self.soft_labels is None else self.soft_labels[keep])


def distill(
    train: LabelledImages,
    num_classes: int,
    config: DistillConfig,
    device: torch.device,
    progress: bool = True,
    min_real_per_class: int = 1,
    expert_cache_dir: Path | None = None,
    max_seconds: float | None = None,
    observer: Observer | None = None,
    start_from: tuple[torch.Tensor, torch.Tensor] | None = None,
    guide: ConvNet | None = None,
    site_id: str | None = None,
    time_limit: Deadline = NO_LIMIT,
    soft_labels: SoftLabelSpec | None = None,
) -> SyntheticSet:
    """Distill ``config.ipc`` synthetic images for every class the site holds enough images of.

    ``site_id`` mixes the site into the requested seed (:func:`site_seed`), so that sites given the
    same request draw their own initial noise and networks; the set's ``config`` stays the request's.

    ``expert_cache_dir`` (MTT only) keeps the site's expert trajectories between runs; they are
    derived from patient data and stay at the site. Two kinds of time limit: ``max_seconds`` is a soft
    stop for benchmarks, which ends the distillation after the iteration during which it runs out and
    returns the set so far (``stopped_early``); ``time_limit`` is the site's hard limit on the whole
    request, checked inside every iteration and every long inner loop, which raises instead.
    ``observer`` sees the set after every iteration (benchmarks score it as it improves).
    Refinement rounds: ``start_from`` (images, labels) is the set the site released last round, where
    distillation starts instead of the initialisation; ``guide`` is the global model, which DC and DM
    match against on every other iteration in place of a fresh random network (MTT only starts from
    the previous set: its targets are the site's own expert trajectories).

    A differentially private method (``dpdm``) gets every class of the task and picks the classes to
    distill from its own noisy counts, so that the choice is covered by its guarantee; its set carries
    the ``dp`` record.

    ``soft_labels`` asks for a teacher trained on the distilled classes' images (``teacher``) to label the set;
    a private method's set keeps its classes only (its guarantee does not cover a teacher). The teacher's
    time counts in the set's ``seconds``.

    Raises:
        DataError: no class has ``min_real_per_class`` images (for a private method: by its noisy counts).
        TimeLimitReached: ``time_limit`` passed before the distillation was done.
    """
    method = method_for(config.method)
    options: dict[str, object] = {}
    if method.private:  # it picks its classes from its own noisy counts: nothing here looks at the true ones
        classes = list(range(num_classes))
        options["min_real_per_class"] = min_real_per_class
    else:
        classes = _classes_to_distill(train, num_classes, min_real_per_class)
    if method.matches_guide and guide is not None:
        options["guide"] = guide.to(device).eval()
    if method.caches_experts:
        options["expert_cache_dir"] = expert_cache_dir
    images = torch.from_numpy(train.images)
    real_by_class = {c: images[torch.from_numpy(train.labels == c)].to(device) for c in classes}

    started = time.perf_counter()
    deadline = deadline_after(max_seconds)
    streams = config if site_id is None else config.model_copy(update={"seed": site_seed(config.seed, site_id)})
    syn_images, history, *private = method.distill(real_by_class, streams, num_classes, device, progress,
                                                   deadline=deadline, observer=observer, start_from=start_from,
                                                   time_limit=time_limit, **options)
    record: DPRelease | None = private[0] if private else None
    if record is not None:
        classes = record.classes

    labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(config.ipc)
    stopped_early = past(deadline) and len(history) < config.iterations
    syn_images = syn_images.detach().cpu()
    soft = None
    if soft_labels is not None and not method.private:
        teacher = train_teacher(real_by_class, num_classes, config.network, soft_labels, streams.seed, device, time_limit)
        soft = teacher_labels(teacher, syn_images, classes, soft_labels.temperature, device)
        log.info("labelled the set with a teacher of %d epochs: it agrees with %.0f %% of the images' classes",
                 soft_labels.teacher_epochs, 100 * float((soft.argmax(1) == labels).float().mean()))
    seconds = time.perf_counter() - started
    return SyntheticSet(syn_images, labels, classes, config, history, seconds, stopped_early, dp=record,
                        soft_labels=soft, label_spec=None if soft is None else soft_labels)


def site_seed(seed: int, site_id: str) -> int:
    """The seed a site's distillation draws from: the requested seed mixed with the site's id.

    Every site gets the same request. On the seed alone they would all start from the same noise and
    meet the same random networks, and sites with similar data would release near duplicates of each
    other's images, which the pooled set gains nothing from.
    """
    return int.from_bytes(hashlib.sha256(f"{seed}/{site_id}".encode()).digest()[:4], "big") >> 1


def _classes_to_distill(train: LabelledImages, num_classes: int, min_real_per_class: int) -> list[int]:
    """The classes the site holds at least ``min_real_per_class`` images of.

    Raises:
        DataError: there is none.
    """
    counts = train.class_counts(num_classes)
    classes = [c for c, n in enumerate(counts) if n >= min_real_per_class]
    skipped = [c for c, n in enumerate(counts) if 0 < n < min_real_per_class]
    if skipped:
        log.warning("not distilling classes %s: fewer than %d local images each", skipped, min_real_per_class)
    if not classes:
        raise DataError(f"no class has the {min_real_per_class} local images needed to distill it")
    return classes
