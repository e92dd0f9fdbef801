"""Binding Flower nodes to sites: a node speaks only for the site it is registered as, with the trusted key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from coordinator.binding import bind_nodes
from coordinator.receive import Expectation, receive_bundle
from shared import crypto
from shared.datasets import dataset_info
from shared.errors import VerificationError
from site_agent.release import seal_release
from tests.conftest import make_request, make_synthetic


@dataclass
class FakeNodeInfo:
    """The fields of Flower's NodeInfo that the binding reads."""

    node_id: int
    name: str = ""
    public_key: bytes = b""


def _spki(key: crypto.NodeKey) -> bytes:
    return crypto.node_key_to_spki(key.public_key())


NODE_KEYS = {site: crypto.generate_node_key() for site in ("site-a", "site-b", "site-c")}
TRUSTED = {site: key.public_key() for site, key in NODE_KEYS.items() if site != "site-c"}


@pytest.mark.parametrize(
    ("node", "site", "problem"),
    [
        (FakeNodeInfo(1, "site-a", _spki(NODE_KEYS["site-a"])), "site-a", ""),
        (FakeNodeInfo(2, "mallory", _spki(NODE_KEYS["site-a"])), "mallory", "not a site in the trust store"),
        (FakeNodeInfo(3, "site-b", _spki(NODE_KEYS["site-a"])), "site-b", "another key than the one trusted"),
        (FakeNodeInfo(4, "site-b", b"not a key"), "site-b", "another key than the one trusted"),
        (FakeNodeInfo(5, "site-c", _spki(NODE_KEYS["site-c"])), "site-c", "no SuperNode key is registered"),
        (FakeNodeInfo(6, "", b""), None, "no registered name"),
    ],
    ids=["registered", "unknown-name", "other-key", "unreadable-key", "no-trusted-node-key", "unnamed-among-named"],
)
def test_node_binding_cases(node: FakeNodeInfo, site: str | None, problem: str) -> None:
    """Each node is bound to its registered name only if the trust store agrees on site and key."""
    reference = FakeNodeInfo(99, "site-a", _spki(NODE_KEYS["site-a"]))  # makes the federation a named one
    nodes = [node] if node.node_id == 1 else [node, reference]
    binding = bind_nodes(nodes, ["site-a", "site-b", "site-c"], TRUSTED)[node.node_id]
    assert binding.site_id == site
    assert (problem in binding.problem) if problem else binding.usable


def test_two_nodes_for_one_site_and_simulated_nodes() -> None:
    """A second node for the same site is refused; unnamed nodes in a simulation are bound to nothing."""
    key = _spki(NODE_KEYS["site-a"])
    bindings = bind_nodes([FakeNodeInfo(1, "site-a", key), FakeNodeInfo(2, "site-a", key)], ["site-a"], TRUSTED)
    assert bindings[1].usable and "already speaks for site 'site-a'" in bindings[2].problem
    simulated = bind_nodes([FakeNodeInfo(7), FakeNodeInfo(8)], [], {})
    assert all(b.usable and b.site_id is None for b in simulated.values())


def test_bundle_for_another_site_than_the_node_is_rejected(keys) -> None:
    """A node registered as site-1 sending a bundle signed as site-0 (with site-0's real key) is rejected."""
    coordinator, sites = keys
    request = make_request()
    sealed = seal_release(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"), 10)
    with pytest.raises(VerificationError, match="claims site 'site-0'.*registered as 'site-1'"):
        receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20, site_id="site-1"), coordinator, set())
    assert receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20, site_id="site-0"), coordinator, set())
