"""Collecting the sites' sets: ask each usable site to distill (again, with the same request, while its release
awaits its operator's approval), then accept or reject each reply, one site never stopping the others."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from flwr.app import Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from pydantic import ValidationError

from coordinator import run_state
from coordinator.federation import Federation, request_record, site_key
from coordinator.messaging import exchange
from coordinator.receive import Expectation, OutcomeStatus, SiteOutcome, receive_bundle
from shared.bundle import OpenedBundle
from shared.config import RunConfig
from shared.errors import FedDistillError, InvalidBundle, InvalidReply
from shared.fields import first_problem
from shared.models import ConvNet
from shared.schemas import DistillReplyMetrics, DistillRequest
from shared.untrusted import untrusted_text
from shared.wire import FieldKey, MessageKind, RecordKey, ReleaseState, release_state_of

log = logging.getLogger(__name__)

# Flower's error replies for a node that went away: the site dropped out, it did not report an error.
_DROPPED_OUT = {ErrorCode.NODE_UNAVAILABLE: "node unavailable", ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "reply expired"}


def ask_sites(
    grid: Grid, federation: Federation, global_model: ConvNet | None = None
) -> tuple[dict[int, DistillRequest], dict[int, Message], list[SiteOutcome], list[OpenedBundle]]:
    """Re-verify what a stopped run stored this round, then ask every other usable site to distill, with a
    fresh nonce (the same request again where a stopped run's site held its release for approval), and,
    from round 2, the global model to refine against.

    Returns the requests sent and replies received by node, and the outcomes and bundles settled so far.
    """
    run_dir, state, bindings = federation.run_dir, federation.state, federation.bindings
    node_of = {site_key(b): b.node_id for b in bindings.values()}
    stored = run_state.reverify_stored(run_dir, state, federation.expectation, federation.keys)
    outcomes = [SiteOutcome.accepted(node_of.get(key), bundle, "delivered before the run was resumed")
                for key, bundle in stored.items()]
    outcomes += [SiteOutcome(b.node_id, b.site_id, OutcomeStatus.REJECTED, b.problem)
                 for b in bindings.values() if not b.usable]
    to_ask = [b for b in bindings.values() if b.usable and site_key(b) not in stored]
    log.info("run %s: %d sites connected, %d bundles already held; asking %d to distill %s",
             state.run_id, len(federation.node_ids), len(stored), len(to_ask), federation.info.name)
    refine = {"round": state.round, "global_model": federation.spec if global_model is not None else None}
    requests = {b.node_id: state.request_to_send(site_key(b), DistillRequest(
                    run_id=state.run_id, nonce=secrets.token_hex(32), dataset=federation.info.name,
                    distill=federation.config.distill_config(), soft_labels=federation.config.soft_label_spec(),
                    **refine))
                for b in to_ask}
    for binding in to_ask:
        state.record_request(site_key(binding), requests[binding.node_id], binding.site_id)
    run_state.save(run_dir, state)  # before asking: a bundle is only accepted for a request on record

    def store(node: int, reply: Message) -> None:
        _store_sealed(run_dir, site_key(bindings[node]), reply, state.round)

    replies = exchange(grid, {node: request_record(req, global_model) for node, req in requests.items()},
                       MessageKind.DISTILL, federation.config.distill_timeout, on_reply=store)
    replies = await_approvals(grid, federation.config, requests, replies, global_model, store)
    return requests, replies, outcomes, list(stored.values())


def await_approvals(
    grid: Grid,
    config: RunConfig,
    requests: Mapping[int, DistillRequest],
    replies: Mapping[int, Message],
    global_model: ConvNet | None,
    on_reply: Callable[[int, Message], None],
) -> dict[int, Message]:
    """Ask each site whose release awaits its operator's approval again, with the same request (same nonce),
    every ``approval-ask-every-s`` until none waits or ``approval-wait-s`` has passed; returns the latest replies.

    A site that approved answers with the release its operator reviewed; one that rejected it says so.
    """
    replies = dict(replies)
    deadline = time.monotonic() + config.approval_wait_s
    while (waiting := sorted(n for n, r in replies.items() if _awaits_approval(r))) and time.monotonic() < deadline:
        pause = min(config.approval_ask_every_s, deadline - time.monotonic())
        log.info("%d sites' releases await their operators' approval; asking them again in %.0f s", len(waiting), pause)
        time.sleep(pause)
        replies |= exchange(grid, {node: request_record(requests[node], global_model) for node in waiting},
                            MessageKind.DISTILL, config.distill_timeout, on_reply=on_reply)
    return replies


def receive_replies(
    federation: Federation,
    requests: Mapping[int, DistillRequest],
    replies: Mapping[int, Message],
    outcomes: list[SiteOutcome],
    accepted: list[OpenedBundle],
) -> tuple[list[OpenedBundle], list[SiteOutcome]]:
    """Accept or reject each asked node's reply (one bad site never stops the others); list who never came."""
    delivered = {b.manifest.site_id for b in accepted}
    outcomes = list(outcomes)
    accepted = list(accepted)
    for node, request in requests.items():
        expected = federation.expectation(request, federation.bindings[node].site_id)
        outcome, bundle = _receive_one(node, replies.get(node), expected, federation, delivered)
        if bundle is not None:
            delivered.add(bundle.manifest.site_id)
            accepted.append(bundle)
        outcomes.append(outcome)
        level = logging.INFO if outcome.status == OutcomeStatus.ACCEPTED else logging.WARNING
        log.log(level, "node %d (site %s): %s %s", node, outcome.site_id or "?", outcome.status, outcome.reason)
    return accepted, outcomes + _never_connected(federation)


def remember_awaiting_approval(federation: Federation, outcomes: list[SiteOutcome]) -> None:
    """Record whose release awaits its site's approval: a resumed run asks them the same request again."""
    key_of = {b.node_id: site_key(b) for b in federation.bindings.values()}
    federation.state.awaiting_approval = sorted(key_of[o.node_id] for o in outcomes
                                                if o.status == OutcomeStatus.AWAITING_APPROVAL and o.node_id in key_of)
    run_state.save(federation.run_dir, federation.state)


def _sealed_bytes(reply: Message) -> bytes:
    """The sealed bundle of a reply, which must carry exactly one bytes field and numbers only."""
    record = reply.content.config_records.get(RecordKey.BUNDLE)
    sealed = None if record is None else record.get(FieldKey.SEALED)
    if not isinstance(sealed, bytes) or set(record.keys()) != {FieldKey.SEALED}:
        raise InvalidBundle("reply carries no sealed bundle (or more than one field)")
    return sealed


def _store_sealed(run_dir: Path, site_key: str, reply: Message, round_number: int) -> None:
    """Keep every received bundle, still encrypted, as it arrives."""
    if not reply.has_error() and reply.has_content():
        try:
            run_state.store_bundle(run_dir, site_key, _sealed_bytes(reply), round_number)
        except InvalidBundle:
            pass  # reported when the reply is received


def _receive_one(
    node: int, reply: Message | None, expected: Expectation, federation: Federation, delivered: set[str]
) -> tuple[SiteOutcome, OpenedBundle | None]:
    site = expected.site_id
    if reply is None:
        timeout = federation.config.distill_timeout
        return SiteOutcome(node, site, OutcomeStatus.MISSING, f"no reply within {timeout:.0f} s (dropped out or too "
                           "slow)"), None
    if reply.has_error():
        if reply.error.code in _DROPPED_OUT:
            return SiteOutcome(node, site, OutcomeStatus.MISSING,
                               f"dropped out ({_DROPPED_OUT[reply.error.code]})"), None
        return SiteOutcome(node, site, OutcomeStatus.REJECTED,
                           f"site reported an error: {untrusted_text(reply.error.reason)}"), None
    if (state := release_state_of(reply)) is not None:
        release, reason = state
        return SiteOutcome(node, site, _RELEASE_STATUS[release], reason), None
    sealed = b""
    try:
        metrics = _reply_metrics(reply)
        sealed = _sealed_bytes(reply)
        opened = receive_bundle(sealed, expected, federation.keys, delivered)
    except FedDistillError as exc:
        return SiteOutcome(node, site, OutcomeStatus.REJECTED, untrusted_text(exc), len(sealed)), None
    metrics["num-examples"] = float(opened.manifest.num_real_examples)  # the signed figure, not the sent one
    return SiteOutcome.accepted(node, opened, metrics=metrics), opened


_RELEASE_STATUS = {ReleaseState.AWAITING_APPROVAL: OutcomeStatus.AWAITING_APPROVAL,
                   ReleaseState.REJECTED_AT_SITE: OutcomeStatus.REJECTED_AT_SITE}


def _awaits_approval(reply: Message) -> bool:
    return (state := release_state_of(reply)) is not None and state[0] == ReleaseState.AWAITING_APPROVAL


def _reply_metrics(reply: Message) -> dict[str, float]:
    """The numbers beside a bundle, bounded; nonsense rejects the reply (the numbers are unsigned).

    Raises:
        InvalidReply: a number is missing, not finite or out of range.
    """
    try:
        parsed = DistillReplyMetrics.model_validate(dict(reply.content.metric_records.get(RecordKey.METRICS, {})))
    except ValidationError as exc:
        raise InvalidReply(f"reply metrics {first_problem(exc)}") from None
    return parsed.model_dump(by_alias=True)


def _never_connected(federation: Federation) -> list[SiteOutcome]:
    """Trusted sites with no connected node (deployment only: simulated sites are not in a trust store)."""
    if not federation.config.keys_dir:
        return []
    connected = {b.site_id for b in federation.bindings.values() if b.usable}
    wait = federation.config.node_wait_timeout
    return [SiteOutcome(None, site, OutcomeStatus.MISSING, f"never connected within {wait:.0f} s")
            for site in sorted(federation.keys.sites) if site not in connected]
