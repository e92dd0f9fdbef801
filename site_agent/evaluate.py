"""Scoring the global model on the site's own images, and what of it may leave: noisy, coarse counts.

The site scores only the global model of its own dataset (channels, classes, image size), as wide, deep and
long-trained as its policy allows, and only as it trains that model itself on sets it or a pinned peer signed
(``site_agent.scored_model``): never weights a coordinator sends, which could be crafted to put one image
alone in a bin and read it off the counts. As a second line, should a peer's set itself be crafted, every
count an answer releases is noisy, and the bins are few and fixed (``shared.metrics.SCORE_EDGES``).
``load_global_model`` checks weights tensor by tensor where a site does take them: the guide of a
refinement round, whose output is a release that passes the privacy gate like any other.

The noise is OpenDP's discrete Laplace (``make_laplace`` on integer vectors, a two-sided geometric drawn
from the operating system's CSPRNG; a constructor OpenDP lists as "contrib"), with scale
``sensitivity / epsilon``, the sensitivity being the L1 change one image can make in what is released:

- evaluate, two classes: 1. Class 1's two histograms (its bin, in the row of its class) are released;
  class 0's histograms are their mirror and the confusion matrix is read off them at log-odds 0.
- evaluate, K > 2 classes: K + 2, its class count, its cell of the confusion matrix and its bin in each
  class's histogram. The class counts are released on their own: totals summed from K noisy cells would be
  K times noisier.
- tune: 3, its class count and the two increments of the hits where its run of right scales starts and
  ends (``shared.metrics.hits_by_scale``); the hits are their running sum.

Everything after the noise is post-processing, which costs no privacy: per-class totals clipped at 0
and at the site's commitment (what its manifest signed, plus half the rounding), and every row fitted
to non-negative integers with its total (``shared.metrics.fit_counts``), so the answer adds up like
exact counts. One answer is ``epsilon``-differentially private towards each image it counts; n answers
are ``n * epsilon`` (docs/privacy.md says what that allows).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shared.datasets import IMAGE_SIZE, DatasetInfo
from shared.errors import InvalidBundle, PolicyError
from shared.metrics import SCORE_BINS, SCORE_EDGES, EvalCounts, committed_cap, fit_counts, hits_by_scale
from shared.models import ConvNet, build_model
from shared.schemas import EvaluateReply, ModelSpec, TuneReply
from shared.training import model_counts, predict_logits
from site_agent.labelled import LabelledImages
from site_agent.policy import SitePolicy

_ABOVE_ZERO = SCORE_EDGES.index(0.0) + 1  # first bin of log-odds >= 0: predicted class 1 of two
TUNE_SENSITIVITY = 3


def check_spec(spec: ModelSpec, info: DatasetInfo) -> None:
    """Refuse a model spec that is not the global model of this site's dataset.

    Raises:
        PolicyError: naming the field and both values.
    """
    for name, asked, own in (("in_channels", spec.in_channels, info.in_channels),
                             ("num_classes", spec.num_classes, info.num_classes),
                             ("image_size", spec.image_size, IMAGE_SIZE)):
        if asked != own:
            raise PolicyError(f"model {name} {asked} is not this site's dataset's ({own}): it scores no other model")


def load_global_model(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec) -> ConvNet:
    """The coordinator's global model, rebuilt from its announced spec once every tensor fits it.

    Raises:
        InvalidBundle: a tensor is missing, extra, of another shape or type, or not finite (named).
    """
    model = build_model(spec)
    expected = model.state_dict()
    names = set(state_dict)
    if names != set(expected):
        raise InvalidBundle(f"received model weights are not the announced network's: {len(names - set(expected))} "
                            f"unknown and {len(set(expected) - names)} missing tensors")
    for name, want in expected.items():
        got = state_dict[name]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            raise InvalidBundle(f"received model weights are not the announced network's: {name} is not "
                                f"{want.dtype} of shape {tuple(want.shape)}")
        if not bool(torch.isfinite(got).all()):
            raise InvalidBundle(f"received model weights hold non-finite values in {name}")
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def evaluate_global_model(
    state_dict: Mapping[str, torch.Tensor], spec: ModelSpec, test: LabelledImages, device: torch.device,
    info: DatasetInfo | None = None,
) -> EvalCounts:
    """Exact class counts, confusion matrix and score histograms of given weights on test data.

    A site's ``evaluate`` never calls this (it scores only the model it trains itself, ``handlers``): it serves
    the harness's FedAvg arm, whose protocol is weights, and tests. A site with no test images gets all-zero
    counts. With ``info`` (the site's dataset) the spec must be its global model's.

    Raises:
        PolicyError: the spec is not the global model of ``info``'s dataset.
        InvalidBundle: the weights do not fit the announced model spec.
    """
    if info is not None:
        check_spec(spec, info)
    model = load_global_model(state_dict, spec)
    return model_counts(model, test.images, test.labels, spec.num_classes, device)


def tuning_counts(
    model: ConvNet, train: LabelledImages, shift: np.ndarray, device: torch.device, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact training images per class (K,) and right predictions per tuning scale (S,) of ``model``."""
    logits = predict_logits(model, torch.from_numpy(train.images), device).numpy()
    return np.bincount(train.labels, minlength=num_classes).astype(np.int64), hits_by_scale(logits, train.labels, shift)


def commitment_caps(committed: Mapping[int, int] | None, num_classes: int, rounding: int) -> list[int] | None:
    """The most images per class consistent with a commitment rounded to ``rounding`` (None: none made)."""
    if committed is None:
        return None
    return [committed_cap(int(committed.get(c, 0)), rounding) for c in range(num_classes)]


def released_evaluation(counts: EvalCounts, epsilon: float | None, caps: list[int] | None = None) -> EvalCounts:
    """What an evaluate answer releases of exact ``counts``: noisy with ``epsilon`` (None: exact), consistent.

    ``caps`` (K,) bound the released images per class (the site's commitment); None leaves them unbounded.
    """
    if epsilon is None:
        return counts
    k = counts.num_classes
    caps = caps or [None] * k
    if k == 2:  # an image sits in one bin of one of class 1's two rows: sensitivity 1
        positive, negative = _noisy(counts.histograms[1], 1 / epsilon, 1, epsilon)
        ones, zeros = _total(positive.sum(), caps[1]), _total(negative.sum(), caps[0])
        positive, negative = fit_counts(positive, ones), fit_counts(negative, zeros)
        histograms = np.stack([np.stack([negative[::-1], positive[::-1]]), np.stack([positive, negative])])
        confusion = np.array([[negative[:_ABOVE_ZERO].sum(), negative[_ABOVE_ZERO:].sum()],
                              [positive[:_ABOVE_ZERO].sum(), positive[_ABOVE_ZERO:].sum()]], np.int64)
        return EvalCounts(np.array([zeros, ones], np.int64), confusion, histograms.astype(np.int64))
    sensitivity = k + 2
    noisy = _noisy(np.concatenate([counts.class_counts, counts.confusion.reshape(-1), counts.histograms.reshape(-1)]),
                   sensitivity / epsilon, sensitivity, epsilon)
    noisy_confusion = noisy[k:k + k * k].reshape(k, k)
    noisy_histograms = noisy[k + k * k:].reshape(k, 2, SCORE_BINS)
    totals = np.array([_total(n, cap) for n, cap in zip(noisy[:k], caps, strict=True)], np.int64)
    confusion = np.stack([fit_counts(row, t) for row, t in zip(noisy_confusion, totals, strict=True)])
    everyone = int(totals.sum())
    histograms = np.stack([np.stack([fit_counts(noisy_histograms[c, 0], totals[c]),
                                     fit_counts(noisy_histograms[c, 1], everyone - totals[c])]) for c in range(k)])
    return EvalCounts(totals, confusion, histograms.reshape(k, 2, SCORE_BINS))


def released_tuning(
    class_counts: np.ndarray, hits: np.ndarray, epsilon: float | None, caps: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What a tune answer releases of exact class counts (K,) and hits (S,): noisy with ``epsilon``, consistent."""
    caps = caps or [None] * len(class_counts)
    if epsilon is None:
        totals = np.array([_total(n, cap) for n, cap in zip(class_counts, caps, strict=True)], np.int64)
        return totals, np.minimum(hits, totals.sum())
    scale = TUNE_SENSITIVITY / epsilon
    noisy_counts = _noisy(np.asarray(class_counts), scale, TUNE_SENSITIVITY, epsilon)
    steps = _noisy(np.diff(np.asarray(hits), prepend=0), scale, TUNE_SENSITIVITY, epsilon)
    totals = np.array([_total(n, cap) for n, cap in zip(noisy_counts, caps, strict=True)], np.int64)
    return totals, np.clip(np.cumsum(steps), 0, int(totals.sum()))


def evaluation_answer(counts: EvalCounts, policy: SitePolicy) -> EvaluateReply:
    """The evaluate reply of exact ``counts``: noisy as the policy says, within the test counts it commits to."""
    epsilon = policy.answers.epsilon
    caps = commitment_caps(policy.released_class_counts(counts.class_counts.tolist()), counts.num_classes,
                           policy.class_count_rounding)
    return EvaluateReply.from_counts(released_evaluation(counts, epsilon, caps), epsilon)


def tuning_answer(
    class_counts: np.ndarray, hits: np.ndarray, policy: SitePolicy, committed: list[int] | None
) -> TuneReply:
    """The tune reply of exact class counts (K,) and hits (S,): noisy as the policy says, within ``committed``
    (the training counts the site signed, as the request repeats them: clipping there is post-processing)."""
    epsilon = policy.answers.epsilon
    totals, noisy_hits = released_tuning(class_counts, hits, epsilon, committed)
    return TuneReply.from_counts(totals, noisy_hits, epsilon)


def _total(noisy: int, cap: int | None) -> int:
    """A noisy total clipped at 0 and at ``cap``."""
    value = max(int(noisy), 0)
    return value if cap is None else min(value, cap)


def _noisy(counts: np.ndarray, scale: float, sensitivity: int, epsilon: float) -> np.ndarray:
    """``counts`` (any shape) plus discrete Laplace noise of ``scale``, whose ``sensitivity`` costs at most ``epsilon``."""
    mechanism = _discrete_laplace(scale)
    assert mechanism.map(sensitivity) <= epsilon * (1 + 1e-9), "noise scale below the answer's epsilon"
    flat = np.asarray(counts, np.int64).reshape(-1)
    return np.asarray(mechanism(flat.tolist()), np.int64).reshape(np.shape(counts))


@functools.lru_cache(maxsize=16)
def _discrete_laplace(scale: float) -> Any:  # an OpenDP Measurement
    """OpenDP's discrete Laplace on integer vectors of any length, with L1 distance; built once per scale."""
    import opendp.prelude as dp  # loaded where an answer is released, not by everything importing this module

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    return dp.m.make_laplace(*space, scale=scale)
