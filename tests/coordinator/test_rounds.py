"""Refinement rounds at the coordinator: a bundle answers one round's request only."""

from __future__ import annotations

import pytest

from coordinator.receive import Expectation, receive_bundle
from shared.datasets import dataset_info
from shared.errors import ReplayError
from shared.schemas import DistillRequest, ModelSpec
from site_agent.release import seal_release
from tests.conftest import make_request, make_synthetic

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28)


def _round(first: DistillRequest, nonce: str) -> DistillRequest:
    return first.model_copy(update={"round": 2, "global_model": SPEC, "nonce": nonce})


def test_a_round_one_bundle_replayed_into_round_two_is_refused(keys) -> None:
    """The round-2 request has a fresh nonce, so the site's round-1 bundle no longer answers anything."""
    coordinator, sites = keys
    first = make_request()
    sealed = seal_release(make_synthetic(first), first, sites["site-0"], dataset_info("breastmnist"), 10)
    assert receive_bundle(sealed, Expectation(first, (1, 28, 28), 2, 1 << 20), coordinator, set())
    with pytest.raises(ReplayError, match="nonce"):
        receive_bundle(sealed, Expectation(_round(first, "cd" * 32), (1, 28, 28), 2, 1 << 20), coordinator, set())


def test_a_bundle_for_another_round_is_refused_even_with_the_same_nonce(keys) -> None:
    """The signed manifest names its round; a request of another round does not accept it."""
    coordinator, sites = keys
    first = make_request()
    sealed = seal_release(make_synthetic(first), first, sites["site-0"], dataset_info("breastmnist"), 10)
    with pytest.raises(ReplayError, match="round 1"):
        receive_bundle(sealed, Expectation(_round(first, first.nonce), (1, 28, 28), 2, 1 << 20), coordinator, set())
