"""Soft labels: a network the site trains on its own training images labels the synthetic set it releases.

A synthetic image distilled for a class is not equally that class: some look like two classes, some barely
like any. The teacher's class probabilities say so, and a model trained on them learns from every image what
the site's real images taught the teacher (``shared.methods.SoftLabelSpec``). The teacher never leaves the
site; only its answers on the synthetic images do, K numbers per image, inside the signed set.

What they can reveal is measured like the images: the privacy report trains its attacked model on the set with
these labels, and its shadow models get teachers of their own (``site_agent.privacy.report``).
"""

from __future__ import annotations

import torch

from shared.methods import NetworkSpec, SoftLabelSpec
from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import TrainSettings, predict_logits, train_classifier
from site_agent.distill.deadline import NO_LIMIT, Deadline


def train_teacher(
    real_by_class: dict[int, torch.Tensor],
    num_classes: int,
    network: NetworkSpec,
    spec: SoftLabelSpec,
    seed: int,
    device: torch.device,
    time_limit: Deadline = NO_LIMIT,
) -> ConvNet:
    """A ConvNet of the release's network trained on the classes being distilled, the way the global model is
    trained (DSA, SGD with momentum) for ``spec.teacher_epochs``; on the CPU in eval mode.

    Raises:
        TimeLimitReached: ``time_limit`` passed during the training.
    """
    images = torch.cat(list(real_by_class.values()))
    labels = torch.cat([torch.full((len(x),), c, dtype=torch.int64) for c, x in real_by_class.items()])
    first = next(iter(real_by_class.values()))
    model_spec = ModelSpec(in_channels=first.shape[1], num_classes=num_classes, image_size=first.shape[-1],
                           network=network)
    torch.manual_seed(seed)
    teacher = build_model(model_spec)
    settings = TrainSettings(epochs=spec.teacher_epochs, seed=seed)
    train_classifier(teacher, images, labels.to(images.device), settings, device, check=time_limit.check)
    return teacher.cpu().eval()


def soft_labels(teacher: ConvNet, images: torch.Tensor, classes: list[int], temperature: float,
                device: torch.device) -> torch.Tensor:
    """The teacher's class probabilities (N, K) for ``images``, ``softmax(logits / temperature)`` over ``classes``
    alone: a class the site did not distill (too few images of it) gets 0, so the labels say nothing of it."""
    logits = predict_logits(teacher, images, device) / temperature
    distilled = torch.zeros(logits.shape[1], dtype=torch.bool)
    distilled[classes] = True
    return torch.softmax(logits.masked_fill(~distilled, float("-inf")), dim=1)
