"""Refinement rounds at the site: the next round starts from the set released last round, guided by the global model."""

from __future__ import annotations

from pathlib import Path

import torch

from shared.methods import DCConfig, DMConfig, InitMode, NetworkSpec
from shared.models import ConvNet
from site_agent.distill import SyntheticSet, distill
from site_agent.distill.matching import starting_images
from site_agent.rounds import keep_released_set, previous_set
from tests.conftest import blobs
from tests.site_agent.generated import NET, SIZE

CPU = torch.device("cpu")


def test_start_from_the_previous_set_and_complete_missing_classes() -> None:
    """Classes the previous set holds start from it; a class it lacks starts from the usual init."""
    real = {0: torch.zeros(5, 1, 4, 4), 1: torch.zeros(5, 1, 4, 4)}
    previous = (torch.full((2, 1, 4, 4), 7.0), torch.tensor([0, 0]))
    start = starting_images(real, 2, InitMode.NOISE, torch.Generator().manual_seed(0), previous)
    assert torch.equal(start[:2], previous[0])
    assert not torch.equal(start[2:], torch.full((2, 1, 4, 4), 7.0))
    fresh = starting_images(real, 2, InitMode.NOISE, torch.Generator().manual_seed(0))
    assert torch.equal(start[2:], fresh[2:])  # the same draw as without a previous set


def test_released_set_is_kept_per_run(tmp_path: Path) -> None:
    """What a site released in a run is found again for that run only."""
    synthetic = SyntheticSet(torch.ones(2, 1, 4, 4), torch.tensor([0, 1]), [0, 1], DMConfig(), [1.0], 0.1)
    keep_released_set(tmp_path, "run-a", synthetic)
    images, labels = previous_set(tmp_path, "run-a")
    assert torch.equal(images, synthetic.images) and labels.tolist() == [0, 1]
    assert previous_set(tmp_path, "run-b") is None


def test_refinement_round_moves_on_from_the_previous_set_with_a_guide() -> None:
    """DM and DC start from the previous set and still improve it, matching against the global model too."""
    data = blobs(size=SIZE, per_class=30)
    net = NetworkSpec(depth=NET.depth, width=NET.width)
    for config in (DMConfig(ipc=2, iterations=4, batch_real=16, network=net),
                   DCConfig(ipc=2, iterations=2, batch_real=16, outer_loop=2, inner_loop=1, network=net)):
        first = distill(data, 2, config, CPU, progress=False)
        second = distill(data, 2, config, CPU, progress=False, start_from=(first.images, first.labels),
                         guide=ConvNet(1, 2, SIZE, net))
        assert second.images.shape == first.images.shape and torch.isfinite(second.images).all()
        assert not torch.equal(second.images, first.images)  # refined, not re-sent as is
        afresh = distill(data, 2, config.model_copy(update={"seed": 1}), CPU, progress=False)
        assert (second.images - first.images).abs().mean() < (afresh.images - first.images).abs().mean()
