"""Which site each Flower node speaks for: the SuperLink's node registration, checked against our trust store.

With SuperNode authentication, the operator registers each site's node key under the site id
(``coordinator sites add ... --superlink``), and ``grid.get_nodes()`` reports each node's ``name``
and ``public_key``. A node is bound to the site of its name when that site is in the trust store and
its key is the SuperNode key registered there; its bundle must then carry exactly that site id (and
so be signed with that site's key). A simulation has no names: there the bundle names its site, and
the signature alone decides (``site_id`` is None).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from shared import crypto


class NodeLike(Protocol):
    """The fields of Flower's ``NodeInfo`` this module reads."""

    node_id: int
    name: str
    public_key: bytes


@dataclass(frozen=True)
class NodeBinding:
    """One connected node: the site it may speak for, or why it is refused before being asked anything."""

    node_id: int
    site_id: str | None  # None: unnamed node (simulation): its bundle names its site
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem


def bind_nodes(
    nodes: Iterable[NodeLike], trusted_sites: Iterable[str], trusted_node_keys: dict[str, crypto.NodePublicKey],
    revoked: dict[str, str] | None = None,
) -> dict[int, NodeBinding]:
    """A binding per node id; a node whose registration does not match the trust store gets a ``problem``.

    ``revoked`` (site id -> when) lets the problem of a revoked site's node say so.
    """
    nodes = sorted(nodes, key=lambda n: n.node_id)
    sites = set(trusted_sites)
    named = any(getattr(n, "name", "") for n in nodes)
    bindings: dict[int, NodeBinding] = {}
    taken: set[str] = set()
    for node in nodes:
        name = getattr(node, "name", "") or ""
        binding = NodeBinding(node.node_id, name or None,
                              _problem(node, name, named, sites, trusted_node_keys, taken, revoked or {}))
        if binding.usable and name:
            taken.add(name)
        bindings[node.node_id] = binding
    return bindings


def _problem(
    node: NodeLike, name: str, named: bool, sites: set[str], node_keys: dict[str, crypto.NodePublicKey], taken: set[str],
    revoked: dict[str, str],
) -> str:
    if not name:
        # Unnamed nodes are simulated sites; among registered nodes, one without a name is not bound to any site.
        return "Flower node has no registered name while the others have (SuperNode authentication off?)" if named else ""
    if name in revoked:
        return f"Flower node is registered as {name!r}, a site revoked at {revoked[name]}: it is refused"
    if name not in sites:
        return f"Flower node is registered as {name!r}, which is not a site in the trust store"
    trusted = node_keys.get(name)
    if trusted is None:
        return f"no SuperNode key is registered for site {name!r} in the trust store (coordinator sites add --node-key)"
    reported = crypto.node_key_from_spki(bytes(getattr(node, "public_key", b"") or b""))
    if reported is None or crypto.node_key_fingerprint(reported) != crypto.node_key_fingerprint(trusted):
        return f"Flower node registered as {name!r} authenticates with another key than the one trusted for that site"
    if name in taken:
        return f"another connected Flower node already speaks for site {name!r}"
    return ""
