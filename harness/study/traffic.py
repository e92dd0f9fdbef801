"""Bytes on the wire, counted where a site sees them: every message it receives and every reply it sends.

A message travels as a tree of Flower objects (message -> record dict -> records -> arrays -> 5 MiB
chunks), each serialized on its own and sent once per tree. ``content_bytes`` is the size of those
serialized objects, headers included, so it is what a site downloads or uploads for the message's
content (HTTP framing and TLS aside). Both study arms wrap their simulated sites in ``traffic_mod``,
so the pooled sets and FedAvg are counted the same way.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

# A new round starts at each of these message types (the pooled arm's distill, FedAvg's train).
ROUND_STARTS = ("query.distill", "train")


def content_bytes(content: RecordDict) -> int:
    """Serialized size of a message's content: every distinct object of its tree, as Flower sends it."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def traffic_mod(folder: Path) -> Callable[[Message, Context, Callable], Message]:
    """A Flower client mod appending ``{site, type, received, sent}`` for every message to ``folder/<site>.jsonl``."""

    def count(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        reply = call_next(msg, context)
        entry = {
            "site": int(context.node_config["partition-id"]),
            "type": msg.metadata.message_type,
            "received": content_bytes(msg.content) if msg.has_content() else 0,
            "sent": content_bytes(reply.content) if reply.has_content() else 0,
        }
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{entry['site']}.jsonl", "a") as handle:  # one writer per site: its own node
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return reply

    return count


def bytes_per_round(folder: Path) -> list[dict[str, float]]:
    """Per round: the mean over sites of the bytes each received and sent, and the cumulative total per site.

    A site's round k begins with its k-th ``query.distill`` or ``train`` message; the messages after it
    (evaluation) belong to the same round.
    """
    per_site: dict[int, dict[int, list[int]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        rounds: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        current = 0
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            current += entry["type"] in ROUND_STARTS
            rounds[max(current, 1)][0] += entry["received"]
            rounds[max(current, 1)][1] += entry["sent"]
        per_site[int(path.stem)] = rounds
    if not per_site:
        return []
    last = max(max(r) for r in per_site.values())
    out, cumulative = [], 0.0
    for k in range(1, last + 1):
        received = sum(r[k][0] for r in per_site.values()) / len(per_site)
        sent = sum(r[k][1] for r in per_site.values()) / len(per_site)
        cumulative += received + sent
        out.append({"round": k, "received": received, "sent": sent, "cumulative": cumulative})
    return out
