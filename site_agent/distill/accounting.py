"""Privacy accounting for the Gaussian mechanism, by Google's maintained ``dp-accounting`` package.

A release adds N(0, (z * Delta)^2) to a statistic whose L2 sensitivity under adding or removing one
example is Delta; ``z`` is the noise multiplier. :func:`noise_multiplier_for` finds the smallest ``z``
that meets a target (epsilon, delta) with the privacy loss distribution (PLD) accountant, which is
tight for the Gaussian mechanism; :func:`epsilon_for` is the other direction. ``steps`` and
``sampling_rate`` describe a mechanism run ``steps`` times, each on a Poisson sample of the data with
that probability (``steps=1, sampling_rate=1``: one release on all of it, as ``dpdm`` does).

:func:`composed_epsilon` is the epsilon of several such releases together (the site's lifetime ledger,
``site_agent.budget``), composed by the same PLD accountant: tighter than adding up each release's
epsilon, and never below the true composition (the discretisation is pessimistic).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import dp_accounting
from dp_accounting.pld import PLDAccountant

ACCOUNTANT = "dp-accounting PLD"  # one of the names shared.schemas.DPGuarantee accepts
MECHANISM = "gaussian"
# The PLD is discretised pessimistically (losses rounded up), so a coarser grid only overstates epsilon;
# 1e-3 keeps a calibration to seconds on a CPU and costs under 1 % of noise against the default 1e-4.
_DISCRETIZATION = 1e-3
_SMALLEST_MULTIPLIER = 0.25  # epsilon above ~20 at delta 1e-5 for one release: beyond any useful target


@dataclass(frozen=True)
class DPRelease:
    """What a differentially private distillation spent and released beside its images.

    ``noisy_class_counts`` (class id -> noisy count, rounded, at least 0, for every class of the task)
    are the mechanism's output and the only class counts such a release may carry; ``classes`` are the
    classes distilled, chosen from those noisy counts.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    sigma: float  # noise standard deviation = noise_multiplier * sensitivity
    sensitivity: float  # L2, under adding or removing one image
    mechanism: str
    accountant: str
    classes: list[int]
    noisy_class_counts: dict[int, int]


def _accountant() -> PLDAccountant:
    return PLDAccountant(value_discretization_interval=_DISCRETIZATION)


def gaussian_event(noise_multiplier: float, steps: int = 1, sampling_rate: float = 1.0) -> dp_accounting.DpEvent:
    """The DP event of ``steps`` Gaussian releases with this noise multiplier, each Poisson-sampled at ``sampling_rate``."""
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    if steps > 1:
        event = dp_accounting.SelfComposedDpEvent(event, steps)
    return event


def _check(delta: float, steps: int, sampling_rate: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta {delta} must be in (0, 1)")
    if steps < 1:
        raise ValueError(f"steps {steps} must be at least 1")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate {sampling_rate} must be in (0, 1]")


def epsilon_for(noise_multiplier: float, delta: float, steps: int = 1, sampling_rate: float = 1.0) -> float:
    """The epsilon the PLD accountant gives this noise multiplier at ``delta``."""
    _check(delta, steps, sampling_rate)
    accountant = _accountant()
    accountant.compose(gaussian_event(noise_multiplier, steps, sampling_rate))
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(epsilon: float, delta: float, steps: int = 1, sampling_rate: float = 1.0) -> float:
    """The smallest noise multiplier (to within 1e-4 relative) whose releases are (epsilon, delta)-DP.

    Args:
        epsilon: the target epsilon, > 0.
        delta: the target delta, in (0, 1).
        steps: how many times the mechanism runs (composed).
        sampling_rate: Poisson sampling probability of each run (1: all the data).

    Returns:
        The noise multiplier z: the noise standard deviation is z times the L2 sensitivity.

    Raises:
        ValueError: a target out of range, or one that needs less noise than ``_SMALLEST_MULTIPLIER``.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon {epsilon} must be positive")
    _check(delta, steps, sampling_rate)
    z = dp_accounting.calibrate_dp_mechanism(
        _accountant, lambda z: gaussian_event(z, steps, sampling_rate), epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(_SMALLEST_MULTIPLIER, 1.0), tol=1e-4,
    )
    return float(z)


@dataclass(frozen=True)
class GaussianRelease:
    """One Gaussian release as the accountant sees it: its noise multiplier, run ``steps`` times at ``sampling_rate``."""

    noise_multiplier: float
    steps: int = 1
    sampling_rate: float = 1.0


def composed_epsilon(releases: Iterable[GaussianRelease], delta: float) -> float:
    """The epsilon, at ``delta``, of all ``releases`` together, composed by the PLD accountant (0 for none).

    Releases with the same noise multiplier, steps and sampling rate are composed as one self-composed
    event (the accountant's ``count``), which is exact and keeps a ledger of hundreds fast.

    Raises:
        ValueError: ``delta`` or a release's steps or sampling rate out of range.
    """
    groups = Counter(releases)
    if not groups:
        return 0.0
    accountant = _accountant()
    for release, count in sorted(groups.items(), key=lambda item: item[0].noise_multiplier):
        _check(delta, release.steps, release.sampling_rate)
        accountant.compose(gaussian_event(release.noise_multiplier, release.steps, release.sampling_rate), count)
    return float(accountant.get_epsilon(delta))
