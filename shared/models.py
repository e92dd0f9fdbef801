"""The ConvNet of the dataset-distillation literature (Gidaris & Komodakis 2018; Zhao et al. 2021).

``depth`` blocks of conv 3x3 (``width`` channels) -> instance norm -> ReLU -> 2x2 average pool,
then one linear classifier. Instance norm is GroupNorm with one group per channel, which keeps each
image's forward pass independent of the rest of its batch (needed for per-class gradient matching).
"""

from __future__ import annotations

import torch
from torch import nn

from shared.methods import NetworkSpec
from shared.schemas import ModelSpec


class ConvNet(nn.Module):
    """Input (N, C, H, W) -> logits (N, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, network: NetworkSpec | None = None):
        super().__init__()
        network = network or NetworkSpec()
        self.width = network.width
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(network.depth):
            layers += [
                nn.Conv2d(channels, network.width, kernel_size=3, padding=1),
                nn.GroupNorm(network.width, network.width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels, size = network.width, size // 2
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for depth {network.depth}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * size * size, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features (N, width * h * w) before the classifier."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build_model(spec: ModelSpec) -> ConvNet:
    """A freshly initialised ConvNet for the given model spec."""
    return ConvNet(spec.in_channels, spec.num_classes, spec.image_size, spec.network)


def resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """ResNet-18 for 28x28 images, as MedMNIST's benchmarks use it: a 3x3 stride-1 stem and no max-pool.

    The study's cross-architecture check: is a pooled set worth as much to a network it was not distilled for?
    """
    from torchvision.models import resnet18 as torchvision_resnet18

    model = torchvision_resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
