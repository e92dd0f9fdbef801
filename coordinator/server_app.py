"""The coordinator as a Flower ServerApp. ``run_federation`` reads as the pipeline:

connect (wait for sites, bind each node to its registered site) -> collect (stored bundles re-verified
when resuming; ``query.distill`` with a fresh nonce to every other site; each reply decrypted, verified
and validated, and stored as it arrives) -> pool -> train (corrected for the sites' class mix) -> tune
that correction (``query.tune``: counts on the sites' training images) -> evaluate (``evaluate`` at every
site that answered; their counts summed) -> report.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from pydantic import ValidationError

from coordinator import report, run_state
from coordinator.binding import NodeBinding, bind_nodes
from coordinator.evaluate import EvalReport, SiteEvaluation, aggregate, parse_site_counts
from coordinator.imbalance import TUNING_SCALES, real_class_prior
from coordinator.messaging import exchange, wait_for_nodes
from coordinator.pool import Commitment, PooledSet, pool
from coordinator.receive import Expectation, OutcomeStatus, SiteOutcome, receive_bundle
from coordinator.train import GlobalModels, train_corrected
from coordinator.trust import CoordinatorKeys, create_simulation_keys, load_coordinator_keys
from shared.bundle import OpenedBundle
from shared.config import RunConfig, resolve_device, simulated_site_id
from shared.datasets import IMAGE_SIZE, DatasetInfo, dataset_info
from shared.errors import (
    FedDistillError,
    FederationError,
    InvalidBundle,
    InvalidReply,
)
from shared.keys import SIMULATION_KEYS
from shared.logs import configure_logging
from shared.models import ConvNet, build_model
from shared.schemas import (
    DistillReplyMetrics,
    DistillRequest,
    EvaluateRequest,
    MetricKey,
    ModelSpec,
    TuneReply,
    TuneRequest,
    first_problem,
)
from shared.untrusted import untrusted_text
from shared.wire import FieldKey, MessageKind, RecordKey, ReleaseState, release_state_of

log = logging.getLogger(__name__)

# Flower's error replies for a node that went away: the site dropped out, it did not report an error.
_DROPPED_OUT = {ErrorCode.NODE_UNAVAILABLE: "node unavailable", ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "reply expired"}


def build_server_app(run_config_overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp; ``run_config_overrides`` stand in for ``--run-config`` in programmatic simulations."""
    app = ServerApp()
    overrides = dict(run_config_overrides or {})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        configure_logging()  # our progress lines in `flwr log` / the simulation's output
        config = RunConfig.from_flower({**context.run_config, **overrides})
        run_federation(grid, config, config.resolved_run_dir(context.run_id))

    return app


@dataclass(frozen=True)
class Federation:
    """The connected sites of one run and what their bundles must match."""

    run_dir: Path
    config: RunConfig
    state: run_state.RunState
    info: DatasetInfo
    spec: ModelSpec
    keys: CoordinatorKeys
    node_ids: list[int]
    bindings: dict[int, NodeBinding]

    def expectation(self, request: DistillRequest, site_id: str | None) -> Expectation:
        shape = (self.spec.in_channels, self.spec.image_size, self.spec.image_size)
        return Expectation(request, shape, self.info.num_classes, int(self.config.max_bundle_mb * 2**20), site_id)


@contextmanager
def timed(stage: str, seconds: dict[str, float]) -> Iterator[None]:
    """Add the wall time of one stage of the run to ``seconds[stage]`` (summed over rounds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def run_federation(grid: Grid, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Every round of a run (or the rest of a stopped one); writes the results folder and returns the summary.

    Raises:
        FederationError: too few sites connected or delivered a valid bundle (the summary says who and why).
        ConfigError: a new run in a folder holding one, or a resume without a stopped run.
    """
    stages: dict[str, float] = {}
    with timed("connect", stages):
        federation = connect(grid, config, run_dir)
    config, state = federation.config, federation.state
    previous, global_model = _previous_round(federation)
    summary, accepted, models = run_round(grid, federation, global_model, previous, stages)
    while state.round < config.rounds:
        log.info("round %d of %d done: balanced accuracy %s, AUC %s", state.round, config.rounds,
                 summary["global"]["balanced_accuracy"], summary["global"]["auc"])
        state.next_round(summary["rounds"][-1])
        run_state.save(run_dir, state)
        previous, global_model = {b.manifest.site_id: b for b in accepted}, models.model
        summary, accepted, models = run_round(grid, federation, global_model, previous, stages)
    pooled = summary["global"]
    log.info("run %s completed after %d round(s): pooled over %d test images: accuracy %s, balanced accuracy %s, "
             "AUC %s; results in %s", state.run_id, state.round, pooled["num_examples"], pooled["accuracy"],
             pooled["balanced_accuracy"], pooled["auc"], run_dir)
    return summary


def run_round(
    grid: Grid,
    federation: Federation,
    global_model: ConvNet | None,
    previous: Mapping[str, OpenedBundle],
    stages: dict[str, float],
) -> tuple[dict[str, Any], list[OpenedBundle], GlobalModels]:
    """One round: ask, receive, pool, train, evaluate, report. A site that delivers nothing this round
    keeps its previous round's set in the pool.

    Raises:
        FederationError: fewer than min-sites sets to pool (the summary is written first).
    """
    config, info, state = federation.config, federation.info, federation.state
    with timed("distill", stages):
        requests, replies, outcomes, accepted = ask_sites(grid, federation, global_model)
    with timed("receive", stages):
        accepted, outcomes = receive_replies(federation, requests, replies, outcomes, accepted)
    _remember_awaiting_approval(federation, outcomes)
    fresh = {b.manifest.site_id for b in accepted}
    carried = [bundle for site, bundle in sorted(previous.items()) if site not in fresh]
    if carried:
        log.warning("round %d: %d sites delivered no new set; their round %d sets stay in the pool",
                    state.round, len(carried), state.round - 1)
    pooled_sets = accepted + carried
    bytes_moved = {"up": sum(o.bundle_bytes for o in outcomes), "down": _model_bytes(global_model) * len(requests)}
    if len(pooled_sets) < config.min_sites:
        waiting = sum(o.status == OutcomeStatus.AWAITING_APPROVAL for o in outcomes)
        held = f" ({waiting} sites' releases await their operators' approval: see approval-wait-s)" if waiting else ""
        message = (f"{len(pooled_sets)} valid bundles, fewer than min-sites={config.min_sites}{held}; the bundles "
                   f"received are kept: continue with `coordinator run --resume {federation.run_dir}`")
        summary = report.build_summary(config, state.run_id, outcomes, None, info, None, stages, "failed", message)
        report.write_results(federation.run_dir, summary, None, info)
        raise FederationError(message)
    # Every site that answered is listed; only those whose set is in the pool committed counts (coordinator.pool),
    # so only they are asked to tune and score: a site whose bundle was rejected is listed as not asked.
    delivered = {o.node_id: o.site_id for o in outcomes if o.status == OutcomeStatus.ACCEPTED and o.site_id}
    site_of = {b.node_id: b.site_id for b in federation.bindings.values() if b.site_id} | delivered
    evaluators = [n for n in federation.node_ids if n in replies or n in delivered]
    with timed("train", stages):
        pooled, models = pool_and_train(federation, pooled_sets)
    tuning = None
    if models.needs_tuning:
        with timed("tune", stages):
            models, tuning = tune_at_sites(grid, federation, models, evaluators, site_of, pooled.commitments)
        bytes_moved["down"] += _model_bytes(models.uncorrected) * len(evaluators)
    torch.save(models.model.state_dict(), federation.run_dir / "global_model.pt")
    with timed("evaluate", stages):
        evaluations = evaluate_at_sites(grid, federation, models, evaluators, site_of, pooled.commitments)
    bytes_moved["down"] += _model_bytes(models.model) * len(evaluators) * len(evaluations)
    summary = report.build_summary(config, state.run_id, outcomes, pooled, info, evaluations, stages, "completed",
                                   correction=models.correction.value, tuning=tuning)
    earlier = state.history[-1]["bytes"]["cumulative"] if state.history else 0
    summary["round"] = state.round
    summary["bytes"] = {**bytes_moved, "cumulative": earlier + bytes_moved["up"] + bytes_moved["down"]}
    record = {"round": state.round, "bytes": summary["bytes"], "sites_accepted": summary["sites_accepted"],
              **{key: summary[key] for key in ("global", "uncorrected") if key in summary}}
    summary["rounds"] = [*state.history, record]
    report.write_results(federation.run_dir, summary, pooled, info)
    return summary, accepted, models


def connect(grid: Grid, config: RunConfig, run_dir: Path) -> Federation:
    """Start (or resume) the run's state, wait for the sites and bind each node to its registered site."""
    state, config = run_state.start(run_dir, config)
    if config.resume:
        report.keep_earlier_attempt(run_dir)
    report.write_run_config(run_dir, config)
    info = dataset_info(config.dataset)
    node_ids = wait_for_nodes(grid, config.sites, config.min_sites, config.node_wait_timeout)
    keys = _coordinator_keys(config, run_dir, len(node_ids))
    wanted = set(node_ids)
    bindings = bind_nodes([n for n in grid.get_nodes() if n.node_id in wanted], keys.sites, keys.node_keys,
                          keys.revoked)
    if config.keys_dir and any(b.site_id is None for b in bindings.values()):
        log.warning("nodes without registered names: SuperNode authentication is off, so a bundle's site is "
                    "vouched for by its signature alone")
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=IMAGE_SIZE,
                     network=config.network())
    return Federation(run_dir, config, state, info, spec, keys, node_ids, bindings)


def ask_sites(
    grid: Grid, federation: Federation, global_model: ConvNet | None = None
) -> tuple[dict[int, DistillRequest], dict[int, Message], list[SiteOutcome], list[OpenedBundle]]:
    """Re-verify what a stopped run stored this round, then ask every other usable site to distill, with a
    fresh nonce (the same request again where a stopped run's site held its release for approval), and,
    from round 2, the global model to refine against.

    Returns the requests sent and replies received by node, and the outcomes and bundles settled so far.
    """
    run_dir, state, bindings = federation.run_dir, federation.state, federation.bindings
    node_of = {_key(b): b.node_id for b in bindings.values()}
    stored = run_state.reverify_stored(run_dir, state, federation.expectation, federation.keys)
    outcomes = [SiteOutcome.accepted(node_of.get(key), bundle, "delivered before the run was resumed")
                for key, bundle in stored.items()]
    outcomes += [SiteOutcome(b.node_id, b.site_id, OutcomeStatus.REJECTED, b.problem)
                 for b in bindings.values() if not b.usable]
    to_ask = [b for b in bindings.values() if b.usable and _key(b) not in stored]
    log.info("run %s: %d sites connected, %d bundles already held; asking %d to distill %s",
             state.run_id, len(federation.node_ids), len(stored), len(to_ask), federation.info.name)
    refine = {"round": state.round, "global_model": federation.spec if global_model is not None else None}
    requests = {b.node_id: state.request_to_send(_key(b), DistillRequest(
                    run_id=state.run_id, nonce=secrets.token_hex(32), dataset=federation.info.name,
                    distill=federation.config.distill_config(), **refine))
                for b in to_ask}
    for binding in to_ask:
        state.record_request(_key(binding), requests[binding.node_id], binding.site_id)
    run_state.save(run_dir, state)  # before asking: a bundle is only accepted for a request on record

    def store(node: int, reply: Message) -> None:
        _store_sealed(run_dir, _key(bindings[node]), reply, state.round)

    replies = exchange(grid, {node: _request_record(req, global_model) for node, req in requests.items()},
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
        replies |= exchange(grid, {node: _request_record(requests[node], global_model) for node in waiting},
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


def pool_and_train(federation: Federation, accepted: list[OpenedBundle]) -> tuple[PooledSet, GlobalModels]:
    """Pool the accepted sets and train the global model on them, corrected by the released class counts."""
    pooled = pool(accepted)
    config = federation.config
    prior = real_class_prior(accepted, federation.info.num_classes)
    models = train_corrected(pooled, federation.spec, config.train_settings(), resolve_device(config.device),
                             config.imbalance, prior)
    return pooled, models


def tune_at_sites(
    grid: Grid, federation: Federation, models: GlobalModels, node_ids: list[int], site_of: Mapping[int, str],
    commitments: Mapping[str, Commitment],
) -> tuple[GlobalModels, dict[str, Any]]:
    """Scale the logit adjustment by what the sites' summed counts on their training images say is most accurate.

    Only a site that committed training counts (``coordinator.pool.Commitment``) is asked, with them in its
    request; one that refuses (its policy), fails, or sends counts that do not add up or exceed its
    commitment is left out. With no counts at all the plain adjustment (scale 1) stays. Sums are in Python
    integers.
    """
    assert models.shift is not None, "only a logit adjustment is tuned"
    requests: dict[int, TuneRequest] = {}
    for node in node_ids:
        site = site_of.get(node, f"node-{node}")
        committed = commitments.get(site)
        if committed is None or committed.train is None:
            log.warning("node %d (site %s) is not asked for tuning counts: it committed no training counts", node, site)
            continue
        requests[node] = TuneRequest(run_id=federation.state.run_id, dataset=federation.info.name,
                                     model=federation.spec, shift=models.shift.tolist(),
                                     committed_counts=list(committed.train))
    timeout = federation.config.evaluate_timeout
    replies = exchange(grid, {node: _request_record(request, models.uncorrected) for node, request in requests.items()},
                       MessageKind.TUNE, timeout)
    counted: dict[str, tuple[int, list[int]]] = {}  # site -> (training images, hits per scale)
    rejected: dict[str, str] = {}
    for node in requests:
        site, reply = site_of.get(node, f"node-{node}"), replies.get(node)
        if reply is None or reply.has_error():
            reason = "no reply" if reply is None else untrusted_text(reply.error.reason)
            log.warning("node %d gave no tuning counts: %s", node, reason)
            continue
        try:
            parsed = TuneReply.model_validate(dict(reply.content.metric_records.get(RecordKey.METRICS, {})))
            class_counts, hits = parsed.checked(federation.info.num_classes)
        except (ValidationError, ValueError) as exc:
            log.warning("node %d: tuning counts rejected: %s", node, untrusted_text(exc))
            rejected[site] = f"rejected: {untrusted_text(exc)}"
            continue
        if why := commitments[site].excess(class_counts, "train"):
            log.warning("node %d (site %s): tuning counts left out: %s", node, site, why)
            rejected[site] = f"rejected: {why}"
            continue
        counted[site] = (sum(int(c) for c in class_counts), [int(h) for h in hits])
    if not counted:
        log.warning("no site sent tuning counts: the logit adjustment keeps scale 1")
        return models, {"scale": models.scale, "sites": 0, "training_images": 0, "rejected": rejected}
    images = sum(n for n, _ in counted.values())
    summed = [sum(hits[i] for _, hits in counted.values()) for i in range(len(TUNING_SCALES))]
    tuned = models.tuned(np.array(summed, dtype=np.int64))
    accuracy = [h / images if images else 0.0 for h in summed]
    log.info("logit adjustment scaled by %.2f: %.3f accuracy on %d training images at %d sites (%.3f at scale 1)",
             tuned.scale, max(accuracy), images, len(counted), accuracy[TUNING_SCALES.index(1.0)])
    return tuned, {"scale": tuned.scale, "sites": len(counted), "training_images": images,
                   "accuracy_by_scale": {f"{scale:g}": round(a, 4) for scale, a in zip(TUNING_SCALES, accuracy)},
                   "shares": {site: round(n / images, 4) if images else 0.0 for site, (n, _) in sorted(counted.items())},
                   "rejected": rejected}


def evaluate_at_sites(
    grid: Grid, federation: Federation, models: GlobalModels, node_ids: list[int], site_of: Mapping[int, str],
    commitments: Mapping[str, Commitment],
) -> dict[str, EvalReport]:
    """Pooled metrics of the global model (``global``) and, when it is corrected, of the uncorrected one.

    Only a site that committed test counts is asked; its counts are pooled within them (``aggregate``).
    """
    variants: dict[str, ConvNet] = {"global": models.model}
    if models.model is not models.uncorrected:
        variants["uncorrected"] = models.uncorrected
    request = EvaluateRequest(run_id=federation.state.run_id, dataset=federation.info.name, model=federation.spec)
    committed = {node for node in node_ids
                 if (c := commitments.get(site_of.get(node, f"node-{node}"))) is not None and c.test is not None}
    unasked = [SiteEvaluation(site_of.get(node, f"node-{node}"), node, None,
                              "not asked: committed no test counts (no set in the pool, or its policy withholds "
                              "class counts)") for node in node_ids if node not in committed]
    asked = [node for node in node_ids if node in committed]
    timeout = federation.config.evaluate_timeout
    reports = {}
    for name, model in variants.items():
        content = _request_record(request, model)
        replies = exchange(grid, {node: content for node in asked}, MessageKind.EVALUATE, timeout)
        evaluations = [_site_evaluation(node, site_of.get(node), replies.get(node), federation.info.num_classes,
                                        timeout) for node in asked]
        reports[name] = aggregate(evaluations + unasked, federation.info.num_classes, commitments)
    return reports


def _remember_awaiting_approval(federation: Federation, outcomes: list[SiteOutcome]) -> None:
    """Record whose release awaits its site's approval: a resumed run asks them the same request again."""
    key_of = {b.node_id: _key(b) for b in federation.bindings.values()}
    federation.state.awaiting_approval = sorted(key_of[o.node_id] for o in outcomes
                                                if o.status == OutcomeStatus.AWAITING_APPROVAL and o.node_id in key_of)
    run_state.save(federation.run_dir, federation.state)


def _key(binding: NodeBinding) -> str:
    """Where a node's request and bundle are kept: its site id, or ``node-<id>`` for an unnamed (simulated) node."""
    return binding.site_id or f"node-{binding.node_id}"


def _coordinator_keys(config: RunConfig, run_dir: Path, num_nodes: int) -> CoordinatorKeys:
    if config.keys_dir:
        return load_coordinator_keys(Path(config.keys_dir).expanduser())
    site_ids = [simulated_site_id(i) for i in range(max(config.sites, num_nodes))]
    return load_coordinator_keys(create_simulation_keys(run_dir / SIMULATION_KEYS, site_ids))


def _request_record(request: DistillRequest | EvaluateRequest, model: ConvNet | None = None) -> RecordDict:
    """A request as JSON, with the model's weights when it carries them (evaluate; distill from round 2)."""
    records: dict[str, Any] = {RecordKey.REQUEST: ConfigRecord({FieldKey.REQUEST_JSON: request.model_dump_json()})}
    if model is not None:
        records[RecordKey.ARRAYS] = ArrayRecord(model.state_dict())
    return RecordDict(records)


def _model_bytes(model: ConvNet | None) -> int:
    """What one copy of the model's weights weighs on the wire (the arrays, without framing)."""
    return 0 if model is None else sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _previous_round(federation: Federation) -> tuple[dict[str, OpenedBundle], ConvNet | None]:
    """When resuming a refinement round: the last round's sets (re-verified) and global model."""
    state = federation.state
    if state.round == 1:
        return {}, None
    sets = run_state.reverify_stored(federation.run_dir, state, federation.expectation, federation.keys,
                                     state.round - 1)
    model = build_model(federation.spec)
    model.load_state_dict(torch.load(federation.run_dir / "global_model.pt", weights_only=True))
    return {b.manifest.site_id: b for b in sets.values()}, model.eval()


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


def _site_evaluation(
    node: int, site_id: str | None, reply: Message | None, num_classes: int, timeout: float
) -> SiteEvaluation:
    """A site's counts, parsed at the door; a site that failed, sent nonsense or no reply is kept with the reason."""
    site = site_id or f"node-{node}"
    if reply is None:
        return SiteEvaluation(site, node, None, f"no evaluation reply within {timeout:.0f} s")
    if reply.has_error():
        reason = untrusted_text(reply.error.reason)
        log.warning("node %d could not evaluate the global model: %s", node, reason)
        return SiteEvaluation(site, node, None, f"site reported an error: {reason}")
    try:
        metrics = reply.content.metric_records.get(RecordKey.METRICS, {})
        counts = parse_site_counts(metrics, num_classes)
    except InvalidReply as exc:
        log.warning("node %d: evaluation rejected: %s", node, untrusted_text(exc))
        return SiteEvaluation(site, node, None, f"rejected: {untrusted_text(exc)}")
    epsilon = metrics.get(MetricKey.EPSILON)  # validated with the counts: a number in (0, 100], or absent
    return SiteEvaluation(site, node, counts, "" if counts.num_examples else "holds no test images",
                          None if epsilon is None else float(epsilon))


app = build_server_app()
