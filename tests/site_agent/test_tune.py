"""Tuning counts: what a site tells the coordinator, from its training images, to scale the imbalance correction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from coordinator.imbalance import TUNING_SCALES
from shared.errors import PolicyError
from shared.models import build_model
from shared.schemas import ModelSpec, NetworkSpec, TuneReply, TuneRequest
from site_agent.audit import read_entries
from site_agent.handlers import answer_tune
from site_agent.policy import SitePolicy
from tests.conftest import deployed_site

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(depth=2, width=16))


def _request(run_id: str = "run-1") -> TuneRequest:
    return TuneRequest(run_id=run_id, dataset="breastmnist", model=SPEC, shift=[-0.5, 0.5], scales=list(TUNING_SCALES))


def test_counts_cover_the_training_images_only_and_spend_the_evaluation_budget(keys, tmp_path: Path) -> None:
    """One confusion matrix per scale over the 24 training images (not the 6 test images), audited; the run's
    evaluation budget counts the call, so a run cannot ask without end."""
    settings = deployed_site(tmp_path, SitePolicy(max_evaluations_per_run=1), test_labels=[0] * 3 + [1] * 3)
    metrics = answer_tune(_request(), build_model(SPEC).state_dict(), settings)
    matrices = TuneReply.model_validate(metrics).matrices(len(TUNING_SCALES), 2)
    assert matrices.shape == (len(TUNING_SCALES), 2, 2)
    assert (matrices.sum(axis=2) == [12, 12]).all()  # every scale counts the same 12 + 12 training images
    # A larger scale of a shift towards class 1 never predicts class 1 less often.
    assert (np.diff(matrices[:, :, 1].sum(axis=1)) >= 0).all()
    entry = [e for e in read_entries(settings.cache_dir) if e.event == "tuning_counts"][-1]
    assert entry.run_id == "run-1" and entry.details == {"training_images": 24, "scales": len(TUNING_SCALES)}
    with pytest.raises(PolicyError, match="evaluations this site's policy allows"):
        answer_tune(_request(), build_model(SPEC).state_dict(), settings)


def test_a_policy_can_withhold_tuning_counts(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(release_tuning_counts=False))
    with pytest.raises(PolicyError, match="release_tuning_counts"):
        answer_tune(_request(), build_model(SPEC).state_dict(), settings)


@pytest.mark.parametrize(("change", "problem"), [
    ({"shift": [0.1, 0.2, 0.3]}, "shift has 3 values for 2 classes"),
    ({"shift": [float("nan"), 0.0]}, "finite"),
    ({"scales": [0.5] * 65}, "at most 64"),
    ({"scales": []}, "at least 1"),
])
def test_a_malformed_tuning_request_is_refused_at_the_door(change: dict, problem: str) -> None:
    fields = json.loads(_request().model_dump_json()) | change
    with pytest.raises(ValidationError, match=problem):
        TuneRequest.model_validate(fields)


def test_counts_that_do_not_add_up_are_refused() -> None:
    """The coordinator checks each reply: every matrix counts the same images, and the lengths fit."""
    good = np.array([[[3, 1], [2, 4]], [[4, 0], [1, 5]]])
    assert TuneReply.from_confusions(good).matrices(2, 2).tolist() == good.tolist()
    other_rows = np.array([[[3, 1], [2, 4]], [[5, 0], [0, 5]]])  # same total, different images per class
    with pytest.raises(ValueError, match="different images per class"):
        TuneReply.from_confusions(other_rows).matrices(2, 2)
    with pytest.raises(ValueError, match="must hold 3 matrices"):
        TuneReply.from_confusions(good).matrices(3, 2)
    inflated = TuneReply.model_validate({"num-examples": 99, "confusions": good.reshape(-1).tolist()})
    with pytest.raises(ValueError, match="does not add up"):
        inflated.matrices(2, 2)
