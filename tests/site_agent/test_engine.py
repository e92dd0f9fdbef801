"""The shared engine pieces: chunked gradients equal one-batch gradients; a site's time limit ends a run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shared.models import ConvNet
from shared.schemas import DCConfig, DMConfig, MTTConfig, NetworkSpec
from shared.training import chunk_size, mean_loss_gradients
from site_agent.distill import distill
from site_agent.distill.matching import embed_in_chunks
from tests.conftest import blobs

CPU = torch.device("cpu")
SMALL = NetworkSpec(depth=2, width=16)


def test_chunked_gradients_equal_one_batch_gradients() -> None:
    """Chunking is a speed choice only: the mean-loss gradient is the same for any chunk size."""
    torch.manual_seed(0)
    net = ConvNet(3, 4, 16, SMALL)
    params = list(net.parameters())
    images, labels = torch.randn(37, 3, 16, 16), torch.randint(0, 4, (37,))
    whole = torch.autograd.grad(F.cross_entropy(net(images), labels), params)
    for chunk in (1, 8, 36, 37, 100):
        chunked, loss = mean_loss_gradients(net, params, images, labels, chunk)
        assert loss == pytest.approx(F.cross_entropy(net(images), labels).item(), rel=1e-5)
        for a, b in zip(whole, chunked, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_embeddings_equal_one_batch_embeddings() -> None:
    torch.manual_seed(0)
    net = ConvNet(1, 2, 16, SMALL)
    images = torch.randn(21, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(embed_in_chunks(net.embed, images, 5), net.embed(images), rtol=1e-4, atol=1e-6)


def test_chunks_are_cache_sized_on_cpu() -> None:
    """Wide networks on large images get small chunks; a tiny network takes big ones; never below 8."""
    assert chunk_size(torch.zeros(256, 3, 32, 32), width=128) == 32
    assert chunk_size(torch.zeros(256, 1, 16, 16), width=16) > 256
    assert chunk_size(torch.zeros(4, 3, 224, 224), width=512) == 8


@pytest.mark.parametrize(
    "config",
    [
        DCConfig(ipc=1, iterations=500, batch_real=16, network=SMALL),
        DMConfig(ipc=1, iterations=100_000, batch_real=16, network=SMALL),
        MTTConfig(ipc=1, iterations=10_000, num_experts=1, expert_epochs=1, max_start_epoch=1, syn_steps=2,
                  train_epochs_expert=2, network=SMALL),
    ],
    ids=["dc", "dm", "mtt"],
)
def test_time_limit_stops_early_and_says_so(config) -> None:
    """A site's max_seconds ends a long run with a usable set and records how far it got."""
    result = distill(blobs(), 2, config, CPU, progress=False, max_seconds=0.5)
    assert result.stopped_early
    assert 1 <= len(result.loss_history) < config.iterations
    assert result.images.isfinite().all()


def test_no_time_limit_runs_every_iteration() -> None:
    config = DCConfig(ipc=1, iterations=3, batch_real=16, network=SMALL)
    result = distill(blobs(), 2, config, CPU, progress=False, max_seconds=None)
    assert not result.stopped_early and len(result.loss_history) == 3
