"""The shared engine pieces: chunked gradients, the time limit, the method registry and the iteration frame."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shared.methods import DCConfig, DMConfig, MTTConfig, NetworkSpec
from shared.models import ConvNet
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


def test_sites_given_one_request_draw_their_own_sets_and_name_the_request() -> None:
    """Two sites with the same data and request release different images (not near duplicates of each
    other); each site alone is reproducible, and the set names the seed it was asked for."""
    config = DMConfig(ipc=2, iterations=3, batch_real=16, network=SMALL, seed=5)
    first = distill(blobs(), 2, config, CPU, progress=False, site_id="site-0")
    again = distill(blobs(), 2, config, CPU, progress=False, site_id="site-0")
    other = distill(blobs(), 2, config, CPU, progress=False, site_id="site-1")
    assert torch.equal(first.images, again.images)
    assert not torch.allclose(first.images, other.images, atol=1e-3)
    assert first.config == other.config == config


def test_every_method_is_the_module_named_after_it() -> None:
    """Each DistillMethod is registered by site_agent/distill/<method>.py; only MTT takes the expert cache,
    only DPDM is private, and neither matches the global model."""
    from shared.methods import DistillMethod
    from site_agent.distill.registry import method_for

    for method in DistillMethod:
        entry = method_for(method)
        assert entry.distill.__module__ == f"site_agent.distill.{method.value}"
        is_mtt, is_dp = method == DistillMethod.MTT, method == DistillMethod.DPDM
        assert entry.caches_experts == is_mtt and entry.private == is_dp
        assert entry.matches_guide == (not is_mtt and not is_dp)


def test_iterations_keep_one_before_a_passed_deadline_and_show_each_kept_one(caplog) -> None:
    """A deadline already past still lets one iteration be kept; the observer sees every kept one, in order."""
    import logging
    import time

    from site_agent.distill.loop import Iterations

    seen = []
    log = logging.getLogger("tests.iterations")

    def run(deadline: float | None, keep: set[int]) -> Iterations:
        loop = Iterations("T", 5, log=log, log_every=2, describe=lambda loss: f"loss {loss:.1f}",
                          images=lambda: torch.zeros(1), progress=False, deadline=deadline,
                          observer=lambda done, images: seen.append(done))
        for iteration in loop:
            if iteration in keep:
                loop.record(iteration, float(iteration))
        return loop

    with caplog.at_level(logging.INFO, logger="tests.iterations"):
        assert run(time.monotonic() - 1, {0, 1, 2}).history == [0.0]
        assert "T: wall-time limit reached after 1 of 5 iterations" in caplog.text
        assert run(None, {1, 2, 4}).history == [1.0, 2.0, 4.0]  # iterations 0 and 3 kept nothing
    assert seen == [1, 1, 2, 3]
    progress = [r.getMessage().split(" (")[0] for r in caplog.records if r.levelno == logging.INFO]
    assert progress == ["T iteration 1/5: loss 0.0", "T iteration 3/5: loss 2.0", "T iteration 5/5: loss 4.0"]
    assert all(" s so far, about " in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_without_a_terminal_no_bar_is_drawn_and_a_slow_run_still_logs_at_a_steady_cadence(
    caplog, capfd, monkeypatch
) -> None:
    """In a log file (a SuperNode's) tqdm's carriage returns would be glued onto log lines; a slow iteration
    must not leave the log silent until the next ``log_every`` (a DM preview once logged 1, then 60)."""
    import logging

    from site_agent.distill import loop

    clock = iter(range(0, 1000, 4))  # every reading of the clock is 4 s after the one before
    monkeypatch.setattr(loop.time, "monotonic", lambda: float(next(clock)))
    log = logging.getLogger("tests.cadence")
    iterations = loop.Iterations("T", 12, log=log, log_every=100, describe=lambda loss: "ok",
                                 images=lambda: torch.zeros(1), progress=True, deadline=None, observer=None)
    with caplog.at_level(logging.INFO, logger="tests.cadence"):
        for iteration in iterations:
            iterations.record(iteration, 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("T iteration 1/12") and lines[-1].startswith("T iteration 12/12")
    assert 3 <= len(lines) <= 6  # every ~10 s of 4-s iterations, not every iteration and not only first and last
    assert "about 0 s left" in lines[-1]
    err = capfd.readouterr().err
    assert "\r" not in err and "it/s" not in err  # stderr is not a terminal under pytest: no bar
