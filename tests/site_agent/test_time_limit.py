"""The site's hard time limit (policy max_seconds): a request too costly for it is stopped within seconds of
the limit, wherever the time goes (one iteration, an inner loop, experts, the privacy report), and nothing
is released. Bounds are generous (limit + 10 s): they say the site does not hang, they time nothing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.datasets import dataset_info
from shared.errors import PolicyError, TimeLimitReached
from shared.methods import DCConfig, DMConfig, DPDMConfig, IDMConfig, MTTConfig, NetworkSpec
from shared.schemas import ModelSpec
from shared.training import TrainSettings
from site_agent import audit
from site_agent.distill import SyntheticSet, distill
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.handlers import answer_distill
from site_agent.labelled import SiteImages
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.privacy.report import ShadowSettings, _shadow_models, measure_privacy
from site_agent.rounds import previous_set
from tests.conftest import blobs, deployed_site, make_request

CPU = torch.device("cpu")
SLACK = 10.0  # seconds past the limit a stopped request may take to answer: one step, on a shared machine
WIDE = NetworkSpec(width=128, depth=3)

# Allowed by a default policy, yet each one's first iteration (or its experts) takes far longer than a second.
COSTLY = [
    IDMConfig(ipc=50, iterations=5000, batch_real=256, queue_size=100, models_trained=4, train_steps=10,
              train_batch=256, network=WIDE),
    DCConfig(ipc=50, iterations=5000, batch_real=256, outer_loop=50, inner_loop=50, network=WIDE),
    MTTConfig(ipc=50, iterations=5000, num_experts=20, train_epochs_expert=50, syn_steps=50, network=WIDE),
    DMConfig(ipc=50, iterations=5000, batch_real=256, network=WIDE),
    DPDMConfig(ipc=50, iterations=5000, network=WIDE),
]


def test_a_deadline_raises_once_passed_and_never_without_a_limit() -> None:
    """The message names the limit and says nothing was released; no limit never passes."""
    assert not NO_LIMIT.passed() and NO_LIMIT.left() == float("inf") and Deadline.after(None) == NO_LIMIT
    NO_LIMIT.check()
    Deadline.after(60).check()
    with pytest.raises(TimeLimitReached, match="stopped at the site's time limit of 0.5 s") as info:
        Deadline(time.monotonic() - 1, 0.5).check()
    assert isinstance(info.value, PolicyError) and "nothing was released" in str(info.value)


@pytest.mark.parametrize("config", COSTLY, ids=[c.method.value for c in COSTLY])
def test_every_method_stops_inside_a_costly_iteration(config) -> None:
    """Each method checks the limit inside its long loops, so a costly first iteration (or MTT's expert
    training) ends within seconds of the limit rather than when it is done."""
    SitePolicy().check(make_request().model_copy(update={"distill": config}))  # allowed by the default policy
    limit = 1.0
    began = time.monotonic()
    with pytest.raises(TimeLimitReached):
        distill(blobs(per_class=60, size=28), 2, config, CPU, progress=False, time_limit=Deadline.after(limit))
    assert time.monotonic() - began < limit + SLACK


def test_a_site_answers_a_too_costly_request_within_its_limit(tmp_path: Path, keys) -> None:
    """A deployed site with a 2 s limit, asked for an allowed but costly IDM run, refuses within seconds of it,
    says why, records the block, and keeps no set."""
    settings = deployed_site(tmp_path, SitePolicy(max_seconds=2))
    request = make_request().model_copy(update={"distill": COSTLY[0]})
    began = time.monotonic()
    with pytest.raises(TimeLimitReached, match="stopped at the site's time limit of 2 s"):
        answer_distill(request, settings, progress=False)
    assert time.monotonic() - began < 2 + SLACK
    decision = [e for e in audit.read_entries(settings.cache_dir) if e.event == audit.AuditEvent.DECISION]
    assert decision[-1].details["decision"] == "blocked" and "time limit" in str(decision[-1].details["why"])
    assert previous_set(settings.cache_dir, request.run_id) is None


def test_the_privacy_report_counts_against_the_same_limit(tmp_path: Path, keys) -> None:
    """A quick distillation followed by a privacy report that would train for minutes is stopped too."""
    policy = SitePolicy(max_seconds=3, privacy=PrivacyLimits(train_epochs=10_000, shadow_models=0))
    settings = deployed_site(tmp_path, policy)
    request = make_request().model_copy(update={"distill": DMConfig(ipc=2, iterations=2, batch_real=8,
                                                                    network=NetworkSpec(width=16, depth=2))})
    began = time.monotonic()
    with pytest.raises(TimeLimitReached, match="time limit of 3 s"):
        answer_distill(request, settings, progress=False)
    assert time.monotonic() - began < 3 + SLACK
    built = [e for e in audit.read_entries(settings.cache_dir) if e.event == audit.AuditEvent.SET_BUILT]
    assert built, "the distillation finished: it was the report that ran out of time"


def _site(per_class: int = 30) -> SiteImages:
    every = blobs(per_class=per_class + 10, seed=4)
    held_out = np.r_[np.arange(10), per_class + 10 + np.arange(10)]
    train = np.setdiff1d(np.arange(len(every)), held_out)
    return SiteImages(dataset_info("breastmnist"), every.subset(train), every.subset(held_out))


def test_a_shadow_model_that_runs_past_its_time_is_dropped_not_fatal() -> None:
    """Shadow models are optional: one still running when the report's time is up is dropped, and the report
    goes on without LiRA instead of failing the release."""
    site = _site()
    small = NetworkSpec(width=16, depth=2)
    endless = DMConfig(ipc=2, iterations=100_000, batch_real=16, network=small)
    synthetic = distill(site.train, 2, endless.model_copy(update={"iterations": 3}), CPU, progress=False)
    synthetic = SyntheticSet(synthetic.images, synthetic.labels, synthetic.classes, endless, synthetic.loss_history,
                             seconds=0.0)  # an estimate of nothing: the first shadow starts
    began = time.monotonic()
    report = measure_privacy(synthetic, site, PrivacyLimits(shadow_models=4, train_epochs=2, max_seconds=2), CPU)
    assert time.monotonic() - began < 2 + SLACK
    assert report.summary.shadow_models == 0 and report.summary.lira is None
    assert any("LiRA not run" in note for note in report.notes)


def test_shadow_models_that_would_not_fit_do_not_start() -> None:
    """A shadow expected to take longer than the time left is not begun."""
    site = _site()
    synthetic = distill(site.train, 2, DMConfig(ipc=2, iterations=3, batch_real=16, network=NetworkSpec(width=16,
                        depth=2)), CPU, progress=False)
    began = time.monotonic()
    spec = ModelSpec(in_channels=1, num_classes=2, image_size=16, network=NetworkSpec(width=16, depth=2))
    found = _shadow_models(synthetic, site.train, [2, 2], spec, TrainSettings(epochs=2), CPU, ShadowSettings(), 4,
                           Deadline.after(60), estimate=120.0, seed=0)
    assert found.in_synthetic == [] and time.monotonic() - began < 1
