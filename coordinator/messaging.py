"""Talking to sites through Flower's Grid: wait for nodes, send one request per node, collect replies.

Replies are matched to nodes by the id of the message they answer, not by their source node id:
an error reply made by the SuperLink (e.g. an expired message) carries the SuperLink as its source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from shared.errors import FederationError

log = logging.getLogger(__name__)

_POLL_SECONDS = 1.0


def wait_for_nodes(grid: Grid, wanted: int, minimum: int, timeout: float) -> list[int]:
    """Node ids once ``wanted`` nodes are connected, or whatever is there at ``timeout`` if at least ``minimum``.

    Raises:
        FederationError: fewer than ``minimum`` nodes connected in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= wanted:
            return node_ids
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
    if len(node_ids) >= minimum:
        log.warning("only %d of %d sites connected within %.0f s; going on with them", len(node_ids), wanted, timeout)
        return node_ids
    raise FederationError(f"only {len(node_ids)} sites connected within {timeout:.0f} s; at least {minimum} are needed")


def exchange(
    grid: Grid,
    contents: Mapping[int, RecordDict],
    message_type: str,
    timeout: float,
    on_reply: Callable[[int, Message], None] | None = None,
) -> dict[int, Message]:
    """Send ``contents[node]`` to each node and collect replies until all arrive or ``timeout`` passes.

    ``on_reply(node_id, reply)`` runs as each reply arrives (e.g. to store a bundle at once). Nodes
    that did not answer in time are absent from the result.
    """
    messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
    sent = dict(zip(grid.push_messages(messages), contents, strict=True))  # message id -> node id
    replies: dict[int, Message] = {}
    deadline = time.monotonic() + timeout
    while len(replies) < len(sent) and time.monotonic() < deadline:
        pending = [mid for mid, node in sent.items() if node not in replies]
        for reply in grid.pull_messages(pending):
            node = sent.get(reply.metadata.reply_to_message_id)
            if node is None or node in replies:
                continue
            replies[node] = reply
            if on_reply is not None:
                on_reply(node, reply)
        if len(replies) < len(sent):
            time.sleep(_POLL_SECONDS)
    return replies
