"""What a site scores and what it releases of a score: its own dataset's network only, noisy counts that add up,
never more images per class than it committed to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.datasets import dataset_info
from shared.errors import InvalidBundle, PolicyError
from shared.methods import NetworkSpec
from shared.metrics import SCORE_BINS, TUNING_SCALES, EvalCounts, fit_counts, log_odds
from shared.models import build_model
from shared.schemas import EvaluateReply, ModelSpec, TuneReply
from site_agent.evaluate import (
    evaluate_global_model,
    evaluation_answer,
    load_global_model,
    released_evaluation,
    tuning_answer,
)
from site_agent.labelled import LabelledImages
from site_agent.policy import AnswerLimits, SitePolicy

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(depth=1, width=8))


def _counts(k: int, n: int, seed: int = 0) -> EvalCounts:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2
    logits[np.arange(n), labels] += 1.0
    return EvalCounts.from_scores(labels, log_odds(logits))


@pytest.mark.parametrize(("change", "problem"), [
    ({"extra.weight": torch.zeros(3)}, "1 unknown and 0 missing"),
    ({"classifier.bias": torch.zeros(3)}, "classifier.bias is not torch.float32 of shape"),
    ({"classifier.bias": torch.zeros(2, dtype=torch.float64)}, "classifier.bias is not torch.float32"),
    ({"classifier.bias": torch.tensor([0.0, float("inf")])}, "non-finite values in classifier.bias"),
])
def test_only_the_announced_networks_tensors_are_loaded(change: dict, problem: str) -> None:
    state = build_model(SPEC).state_dict() | change
    with pytest.raises(InvalidBundle, match=problem):
        load_global_model(state, SPEC)


def test_a_spec_for_another_dataset_is_refused_before_scoring() -> None:
    test = LabelledImages(np.zeros((2, 1, 28, 28), np.float32), np.array([0, 1]))
    spec = SPEC.model_copy(update={"in_channels": 3})
    with pytest.raises(PolicyError, match="in_channels 3 is not this site's dataset's"):
        evaluate_global_model(build_model(spec).state_dict(), spec, test, torch.device("cpu"),
                              dataset_info("breastmnist"))


@pytest.mark.parametrize("k", [2, 5])
def test_noisy_answers_add_up_and_stay_within_the_commitment(k: int) -> None:
    """Every released count is a non-negative integer, consistent with the others as the coordinator checks them,
    and no class count exceeds its cap; two classes keep their mirror symmetry."""
    exact = _counts(k, 80)
    caps = [int(c) - 1 for c in exact.class_counts]
    for _ in range(30):
        released = released_evaluation(exact, 1.0, caps)
        parsed = EvaluateReply.model_validate(EvaluateReply.from_counts(released, 1.0).to_metrics()).counts(k)
        assert (parsed.class_counts <= caps).all() and (parsed.histograms >= 0).all()
        if k == 2:
            np.testing.assert_array_equal(parsed.histograms[0], parsed.histograms[1, ::-1, ::-1])
            assert parsed.histograms.shape == (2, 2, SCORE_BINS)


def test_the_policy_decides_the_noise_and_the_commitment_bounds_the_answer() -> None:
    """The default policy answers with noise at epsilon 1 and says so; its caps are the test counts it commits to
    (rounded as the policy says, plus half the rounding). A policy with epsilon null answers exact counts."""
    exact = _counts(2, 60)
    noisy = evaluation_answer(exact, SitePolicy(class_count_rounding=10))
    n = [int(c) for c in exact.class_counts]
    assert noisy.epsilon == 1.0
    assert all(c <= round(m / 10) * 10 + 5 for c, m in zip(noisy.class_counts, n, strict=True))
    exact_answer = evaluation_answer(exact, SitePolicy(answers=AnswerLimits(epsilon=None)))
    assert exact_answer.epsilon is None and exact_answer.counts(2).confusion.tolist() == exact.confusion.tolist()
    tuned = tuning_answer(np.array([30, 20]), np.full(len(TUNING_SCALES), 40), SitePolicy(), [25, 25])
    class_counts, hits = TuneReply.model_validate(tuned.to_metrics()).checked(2)
    assert (class_counts <= [25, 25]).all() and (hits <= class_counts.sum()).all()


def test_fit_counts_is_the_nearest_consistent_answer() -> None:
    """Projection onto non-negative integers with the total: small noise above a zero goes, the total holds."""
    fitted = fit_counts(np.array([20, 1, -1, 2, 0]), 21)
    assert fitted.sum() == 21 and (fitted >= 0).all() and fitted[0] >= 19
    assert fit_counts(np.array([3, 4]), 0).tolist() == [0, 0]
    assert fit_counts(np.array([-3, -4, -5]), 3).sum() == 3
