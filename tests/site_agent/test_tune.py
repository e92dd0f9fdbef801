"""Tuning counts: what a site tells the coordinator, from its training images, to scale the imbalance correction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from shared.errors import PolicyError
from shared.methods import NetworkSpec
from shared.metrics import TUNING_SCALES
from shared.schemas import ModelSpec, TuneReply, TuneRequest
from site_agent.audit import read_entries
from site_agent.handlers import answer_tune
from site_agent.policy import AnswerLimits, SitePolicy
from tests.conftest import QUICK_TRAINING, deployed_site, signed_pool

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(depth=2, width=16))


def _request(run_id: str = "run-1", committed: list[int] | None = None) -> TuneRequest:
    return TuneRequest(run_id=run_id, dataset="breastmnist", model=SPEC, training=QUICK_TRAINING, shift=[-0.5, 0.5],
                       committed_counts=committed)


def test_counts_cover_the_training_images_only_and_spend_the_evaluation_budget(keys, tmp_path: Path) -> None:
    """Exact (ε null): hits per scale of the grid over the 24 training images (not the 6 test images), audited; the
    run's evaluation budget counts the call, so a run cannot ask without end."""
    policy = SitePolicy(max_evaluations_per_run=1, answers=AnswerLimits(epsilon=None))
    settings = deployed_site(tmp_path, policy, test_labels=[0] * 3 + [1] * 3)
    pool = signed_pool(keys, tmp_path)
    metrics = answer_tune(_request(), pool, settings)
    class_counts, hits = TuneReply.model_validate(metrics).checked(2)
    assert class_counts.tolist() == [12, 12] and len(hits) == len(TUNING_SCALES) and "epsilon" not in metrics
    entry = [e for e in read_entries(settings.cache_dir) if e.event == "tuning_counts"][-1]
    assert entry.run_id == "run-1" and entry.details == {"training_images": 24, "scales": len(TUNING_SCALES),
                                                         "pooled_sites": ["site-0", "site-1"]}
    with pytest.raises(PolicyError, match="evaluations this site's policy allows"):
        answer_tune(_request(), pool, settings)


def test_noisy_counts_stay_within_the_commitment_the_request_repeats(keys, tmp_path: Path) -> None:
    """With noise (the default policy) the reply says its epsilon, adds up, and never counts more images per class
    than the commitment the request carries."""
    settings = deployed_site(tmp_path, SitePolicy())
    for run in range(5):
        metrics = answer_tune(_request(f"run-{run}", committed=[10, 11]), signed_pool(keys, tmp_path, f"run-{run}"),
                              settings)
        reply = TuneReply.model_validate(metrics)
        class_counts, hits = reply.checked(2)
        assert reply.epsilon == 1.0 and (class_counts <= [10, 11]).all() and (hits <= class_counts.sum()).all()


def test_a_policy_can_withhold_tuning_counts(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(release_tuning_counts=False))
    with pytest.raises(PolicyError, match="release_tuning_counts"):
        answer_tune(_request(), signed_pool(keys, tmp_path), settings)


def test_a_model_for_another_dataset_is_not_scored(keys, tmp_path: Path) -> None:
    """The site scores only its own dataset's global model: three classes on BreastMNIST are refused by name."""
    settings = deployed_site(tmp_path, SitePolicy())
    spec = SPEC.model_copy(update={"num_classes": 3})
    request = TuneRequest(run_id="run-1", dataset="breastmnist", model=spec, training=QUICK_TRAINING,
                          shift=[0.0, 0.0, 0.0])
    with pytest.raises(PolicyError, match="num_classes 3 is not this site's dataset's"):
        answer_tune(request, signed_pool(keys, tmp_path), settings)


@pytest.mark.parametrize(("change", "problem"), [
    ({"shift": [0.1, 0.2, 0.3]}, "one value per class"),
    ({"shift": [float("nan"), 0.0]}, "finite"),
    ({"shift": [200.0, 0.0]}, "less than or equal to 150"),
    ({"committed_counts": [1, 2, 3]}, "one value per class"),
    ({"scales": [0.5, 1.0]}, "Extra inputs"),  # the grid is published: a request names no scale
])
def test_a_malformed_tuning_request_is_refused_at_the_door(change: dict, problem: str) -> None:
    fields = json.loads(_request().model_dump_json()) | change
    with pytest.raises(ValidationError, match=problem):
        TuneRequest.model_validate(fields)


def test_counts_that_do_not_add_up_are_refused() -> None:
    """The coordinator checks each reply: the class counts add up, one hit count per scale, none above the total."""
    hits = np.arange(len(TUNING_SCALES))
    good = TuneReply.from_counts(np.array([20, 10]), hits)
    assert good.checked(2)[1].tolist() == hits.tolist()
    with pytest.raises(ValueError, match="one count for each"):
        TuneReply.from_counts(np.array([20, 10]), hits[:5]).checked(2)
    with pytest.raises(ValueError, match="more images than num-examples"):
        TuneReply.from_counts(np.array([2, 1]), hits).checked(2)
    inflated = TuneReply.model_validate({"num-examples": 99, "class-counts": [20, 10], "hits": hits.tolist()})
    with pytest.raises(ValueError, match="adding up to num-examples"):
        inflated.checked(2)
