"""Waiting for sites and collecting replies: late or silent sites are left out, not waited on forever."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from coordinator import messaging
from shared.errors import FederationError


class FakeGrid:
    """Just enough of Flower's Grid: nodes, and replies only from the nodes that answer."""

    def __init__(self, nodes: list[int], answering: set[int]) -> None:
        self.nodes, self.answering, self.sent = nodes, answering, {}

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            mid = f"m{i}"
            msg.metadata.__dict__["_message_id"] = mid
            self.sent[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        replies = []
        for mid in ids:
            msg = self.sent[mid]
            if msg.metadata.dst_node_id in self.answering:
                reply = Message(RecordDict({"r": ConfigRecord({"ok": True})}), reply_to=msg)
                replies.append(reply)
        return replies


pytestmark = pytest.mark.usefixtures("fast_polling")


def test_silent_site_is_missing_from_replies() -> None:
    """A node that never answers is absent after the timeout; the others' replies are kept and reported."""
    grid = FakeGrid([1, 2, 3], answering={1, 3})
    seen = []
    replies = messaging.exchange(grid, {n: RecordDict() for n in (1, 2, 3)}, "query.distill", timeout=0.2,
                                 on_reply=lambda node, _: seen.append(node))
    assert sorted(replies) == [1, 3] and sorted(seen) == [1, 3]


def test_wait_for_nodes_goes_on_with_enough_and_fails_with_too_few() -> None:
    """Fewer nodes than wanted but at least the minimum: go on; below the minimum: a clear error."""
    assert messaging.wait_for_nodes(FakeGrid([1, 2], set()), wanted=3, minimum=2, timeout=0.05) == [1, 2]
    with pytest.raises(FederationError, match="only 1 sites connected"):
        messaging.wait_for_nodes(FakeGrid([1], set()), wanted=3, minimum=2, timeout=0.05)
