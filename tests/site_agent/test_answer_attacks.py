"""Issue 27, part 2: crafted models that read single test images off evaluate answers, against the old exact
1000-bin counts and against the noise a site adds now (12 bins, discrete Laplace).

A site no longer scores weights it is sent (``tests/site_agent/test_scored_model.py``): it trains the model itself
on sets it or a pinned peer signed. These attacks measure the second line, the noise, as if a pinned peer had
colluded with the coordinator and crafted its set into such a model. The crafted
network is the smallest the policy allows (depth 1): a convolution copying the image into two channels, +x and -x,
which instance norm standardises and ReLU splits, so after pooling the classifier's log-odds is any linear function
``w . pool(z) + b`` of the 14x14 pooled standardised image ``z`` (the "linear probe" of the issue). Everything runs
through the site's own code: ``evaluate_global_model`` (spec and tensors checked) and ``evaluation_answer``.

The attacker is given more than the API gives (who is isolated, and where, is handed to it for free), so a bound
that holds here holds for the real attack too. Each answer is independent given the model, so an attack with n
answers is exact arithmetic on n draws of one answer's noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.datasets import dataset_info
from shared.methods import NetworkSpec
from shared.metrics import SCORE_EDGES
from shared.models import build_model
from shared.schemas import EvaluateReply, ModelSpec
from site_agent.evaluate import evaluate_global_model, evaluation_answer
from site_agent.labelled import LabelledImages
from site_agent.policy import AnswerLimits, BudgetLimits, SitePolicy

CPU = torch.device("cpu")
INFO = dataset_info("breastmnist")
SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(depth=1, width=8))
# What one coordinator may ask of a site over its lifetime: the default budget's evaluate answers per coordinator key.
ANSWERS = BudgetLimits().max_evaluations_lifetime
OLD_EDGES = np.linspace(-20.0, 20.0, 1001)  # the 1000 bins the site released before


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normalised images (n, 1, 28, 28): smooth random fields (7x7 upsampled) plus a little pixel noise."""
    coarse = rng.normal(size=(n, 1, 7, 7))
    fine = np.kron(coarse, np.ones((1, 1, 4, 4))) + 0.3 * rng.normal(size=(n, 1, 28, 28))
    return np.tanh(fine / 2).astype(np.float32)


def _pooled(images: np.ndarray) -> np.ndarray:
    """What the crafted network sees: each image standardised, then 2x2-average-pooled, flattened (n, 196)."""
    z = (images - images.mean(axis=(2, 3), keepdims=True)) / np.sqrt(images.var(axis=(2, 3), keepdims=True) + 1e-5)
    return z.reshape(len(images), 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(images), 196)


def _probe(weights: np.ndarray, bias: float) -> dict[str, torch.Tensor]:
    """A depth-1 ConvNet whose class-1 log-odds is ``weights . pool(z) + bias`` (weights (196,)) and class 0's logit 0."""
    state = {k: torch.zeros_like(v) for k, v in build_model(SPEC).state_dict().items()}
    state["features.0.weight"][0, 0, 1, 1], state["features.0.weight"][1, 0, 1, 1] = 1.0, -1.0
    state["features.1.weight"][:] = 1.0  # instance norm's scale
    w = torch.as_tensor(weights, dtype=torch.float32).reshape(14, 14).flatten()
    classifier = torch.zeros(2, 8, 14, 14)
    classifier[1, 0], classifier[1, 1] = w.reshape(14, 14), -w.reshape(14, 14)  # relu(z) - relu(-z) = z
    state["classifier.weight"] = classifier.reshape(2, -1)
    state["classifier.bias"] = torch.tensor([0.0, bias])
    return state


def _class1_rows(state: dict[str, torch.Tensor], test: LabelledImages, epsilon: float | None, answers: int,
                 old: bool = False) -> np.ndarray:
    """What the coordinator reads off ``answers`` evaluate answers: class 1's two histograms added up per answer,
    (answers, bins). ``old``: the exact counts over the 1000 bins the site used to release."""
    if old:
        scores = state["classifier.bias"][1].item() + _pooled(test.images) @ _weights_of(state)
        row = np.bincount(np.clip(np.searchsorted(OLD_EDGES, scores, side="right") - 1, 0, 999), minlength=1000)
        return np.repeat(row[None], answers, axis=0)
    counts = evaluate_global_model(state, SPEC, test, CPU, INFO)  # the site's own scoring, spec and tensors checked
    policy = SitePolicy(answers=AnswerLimits(epsilon=epsilon))
    rows = []
    for _ in range(answers):
        released = EvaluateReply.model_validate(evaluation_answer(counts, policy).to_metrics()).counts(2)
        rows.append(released.histograms[1].sum(axis=0))
    return np.array(rows)


def _bins(old: bool) -> tuple[np.ndarray, np.ndarray]:
    """The left edges and centres of the bins released: the old 1000 over [-20, 20], or the 12 of SCORE_EDGES."""
    if old:
        return OLD_EDGES[:-1], (OLD_EDGES[:-1] + OLD_EDGES[1:]) / 2
    edges = np.array(SCORE_EDGES)
    return np.concatenate([[-np.inf], edges]), np.concatenate([[edges[0] - 0.5], (edges[:-1] + edges[1:]) / 2,
                                                               [edges[-1] + 0.5]])


def _weights_of(state: dict[str, torch.Tensor]) -> np.ndarray:
    return state["classifier.weight"].reshape(2, 8, 14, 14)[1, 0].reshape(-1).numpy().astype(np.float64)


def _site(seed: int, n: int = 30) -> tuple[LabelledImages, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return LabelledImages(_images(rng, n), rng.integers(0, 2, n)), rng


# Membership: "is this known image among your test images?" -------------------------------------------------------


def _says_member(target: np.ndarray, test: LabelledImages, epsilon: float | None, answers: int,
                 old: bool = False) -> bool:
    """Score = 30 * (projection on the target's pooled image - 1/2): the target alone at 15, everyone else at the
    bottom; the attacker counts the scores from 5 up (the top bin of the 12). With one answer it says "member" when
    that count is 1 or more; with more, it spends half of them on a baseline model that puts everyone at the bottom
    (the same counts, had the target been absent) and says "member" when the top count beats the baseline's by two
    standard errors."""
    t = _pooled(target[None])[0]
    top = _bins(old)[0] >= 5
    isolating = _class1_rows(_probe(30 * t / (t @ t), -15.0), test, epsilon, max(1, answers // 2), old)[:, top].sum(1)
    if answers == 1 or epsilon is None:
        return bool(isolating.mean() >= 1)
    baseline = _class1_rows(_probe(np.zeros(196), -30.0), test, epsilon, answers // 2, old)[:, top].sum(1)
    error = math.sqrt((isolating.var() + baseline.var()) / (answers // 2)) + 1e-9
    return bool(isolating.mean() - baseline.mean() > 2 * error)


def _membership_advantage(epsilon: float | None, answers: int, old: bool = False, targets: int = 12) -> float:
    """TPR - FPR of the attack, over targets in and out of the test set (each test set a fresh site of 30 images)."""
    in_set, out_set = [], []
    for seed in range(targets):
        test, rng = _site(seed)
        target = _images(rng, 1)[0]
        with_target = LabelledImages(np.concatenate([test.images, target[None]]), np.append(test.labels, 1))
        in_set.append(_says_member(target, with_target, epsilon, answers, old))
        out_set.append(_says_member(target, test, epsilon, answers, old))
    return float(np.mean(in_set) - np.mean(out_set))


def test_membership_read_off_the_old_counts_in_one_answer() -> None:
    """The old exact counts: one answer tells a member from a non-member every time (the attack is real)."""
    assert _membership_advantage(None, 1, old=True) == 1.0
    assert _membership_advantage(None, 1) == 1.0  # exact 12-bin counts too: coarse bins alone protect nothing


def test_one_noisy_answer_keeps_membership_within_its_epsilon_bound() -> None:
    """One answer at the default epsilon (1): the advantage of any test is at most tanh(epsilon / 2) = 0.46; the
    attack that was certain on exact counts measured about 0.05."""
    epsilon = AnswerLimits().epsilon
    advantage = _membership_advantage(epsilon, 1, targets=40)
    assert advantage <= math.tanh(epsilon / 2) + 0.1  # 0.1: the spread of 40 + 40 targets


# Reconstruction: an isolated image's thumbnail, one pooled pixel per answer -------------------------------------


def _reconstruct(epsilon: float | None, answers: int, old: bool = False, seed: int = 0) -> float:
    """The linear-probe attack: the isolated image's score is ``beta * pool(z)[j]`` near 0, everyone else's far
    below (the attacker is handed the isolating direction); the bin the single image lands in reads pixel j. Returns
    the correlation of the rebuilt 14x14 thumbnail with the true one."""
    test, rng = _site(seed)
    target = _images(rng, 1)[0]
    test = LabelledImages(np.concatenate([test.images, target[None]]), np.append(test.labels, 0))
    t = _pooled(target[None])[0]
    isolate = 80 * t / (t @ t)  # the target at 80, the others far below it
    beta = 4.0 if old else 1.0  # spread the pixel's range over the finest bins there are
    centres = _bins(old)[1][1:-1]
    per_pixel = max(1, answers // 196)
    middles = []
    for j in range(min(196, answers)):
        weights = isolate.copy()
        weights[j] += beta
        rows = _class1_rows(_probe(weights, -80.0), test, epsilon, per_pixel, old)
        middles.append(rows[:, 1:-1].mean(axis=0))  # the others sit in the bottom bin
    middles = np.array(middles)
    excess = (middles - np.median(middles, axis=0)).clip(min=0)  # above what the noise leaves in most answers
    totals = excess.sum(axis=1)
    weighted = np.where(totals > 0, excess @ centres / np.where(totals > 0, totals, 1), 0.0) / beta
    likeliest = centres[excess.argmax(axis=1)] / beta
    return max(float(np.corrcoef(np.resize(estimate, 196), t)[0, 1]) for estimate in (weighted, likeliest))


def test_reconstruction_off_the_old_counts_is_exact() -> None:
    """The old counts rebuild the isolated image's thumbnail (correlation 1.000 in the issue)."""
    assert _reconstruct(None, 196, old=True) > 0.99


@pytest.mark.parametrize("seed", [0, 1])
def test_reconstruction_through_noisy_answers_fails(seed: int) -> None:
    """A lifetime of answers at the default epsilon (2000: about ten per pooled pixel): the rebuilt thumbnail
    correlates about 0.16 with the true one. The noise is the OS's, unseeded, so each lifetime is a fresh draw:
    over 50 measured, the median was 0.16 and 2 went above 0.3 (the highest 0.33), so five lifetimes are played
    and their median held to 0.25, none above 0.4. (At epsilon 4 the same attack rebuilds it: docs/privacy.md.)"""
    correlations = [_reconstruct(AnswerLimits().epsilon, ANSWERS, seed=seed) for _ in range(5)]
    assert float(np.median(correlations)) <= 0.25 and max(correlations) <= 0.4, correlations
