"""The coordinator as a Flower ServerApp. ``main`` reads as the pipeline:

wait for sites -> bind each node to its registered site -> ``query.distill`` with a fresh nonce per
site (only those without a stored valid bundle when resuming) -> receive (decrypt, verify, validate;
stored as they arrive) -> pool -> train_global -> ``evaluate`` at every site that answered -> aggregate -> report.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from coordinator import report, run_state
from coordinator.binding import NodeBinding, bind_nodes
from coordinator.evaluate import SiteEvaluation, aggregate, parse_site_counts
from coordinator.messaging import exchange, wait_for_nodes
from coordinator.pool import pool
from coordinator.receive import Expectation, SiteOutcome, receive_bundle
from coordinator.train import train_global
from coordinator.trust import CoordinatorKeys, create_simulation_keys, load_coordinator_keys
from shared.bundle import OpenedBundle
from shared.config import RunConfig, resolve_device, simulated_site_id
from shared.datasets import IMAGE_SIZE, dataset_info
from shared.errors import FedDistillError, FederationError, InvalidBundle, InvalidReply
from shared.keys import SIMULATION_KEYS
from shared.logs import configure_logging
from shared.schemas import DistillRequest, EvaluateRequest, FieldKey, ModelSpec, RecordKey

log = logging.getLogger(__name__)


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


def run_federation(grid: Grid, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """One full round (or the rest of a stopped one); writes the results folder and returns the summary.

    Raises:
        FederationError: too few sites connected or delivered a valid bundle (the summary says who and why).
        ConfigError: a new run in a folder holding one, or a resume without a stopped run.
    """
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    state, config = run_state.start(run_dir, config)
    info = dataset_info(config.dataset)
    run_id = state.run_id
    report.write_run_config(run_dir, config)
    node_ids = wait_for_nodes(grid, config.sites, config.min_sites, config.node_wait_timeout)
    keys = _coordinator_keys(config, run_dir, len(node_ids))
    bindings = bind_nodes(_node_infos(grid, node_ids), keys.sites, keys.node_keys)
    if config.keys_dir and any(b.site_id is None for b in bindings.values()):
        log.warning("nodes without registered names: SuperNode authentication is off, so a bundle's site is "
                    "vouched for by its signature alone")
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=IMAGE_SIZE,
                     network=config.network())
    image_shape = (spec.in_channels, spec.image_size, spec.image_size)
    max_bytes = int(config.max_bundle_mb * 2**20)

    # Bundles a stopped run already received are re-verified, and their sites are not asked again.
    outcomes, accepted, delivered = _reverify_stored(run_dir, state, bindings, image_shape, info.num_classes, keys,
                                                     max_bytes)
    outcomes += [SiteOutcome(b.node_id, b.site_id, "rejected", b.problem) for b in bindings.values() if not b.usable]
    to_ask = [b for b in bindings.values() if b.usable and _key(b) not in delivered]
    log.info("run %s: %d sites connected, %d bundles already held; asking %d to distill %s",
             run_id, len(node_ids), len(accepted), len(to_ask), config.dataset)

    requests = {
        b.node_id: DistillRequest(run_id=run_id, nonce=secrets.token_hex(32), dataset=info.name,
                                  distill=config.distill_config())
        for b in to_ask
    }
    state.requests.update({_key(bindings[node]): request for node, request in requests.items()})
    run_state.save(run_dir, state)  # before asking: a bundle is only accepted for a request on record
    replies = exchange(grid, {node: _request_record(req) for node, req in requests.items()}, "query.distill",
                       config.distill_timeout,
                       on_reply=lambda node, reply: _store_sealed(run_dir, _key(bindings[node]), reply))
    stages["distill"] = time.perf_counter() - clock

    clock = time.perf_counter()
    expectations = {node: Expectation(req, image_shape, info.num_classes, max_bytes, bindings[node].site_id)
                    for node, req in requests.items()}
    new_outcomes, new_accepted = _receive_all(list(requests), replies, expectations, keys, config,
                                              {o.site_id for o in outcomes if o.status == "accepted"})
    outcomes += new_outcomes + _never_connected(keys, bindings, config)
    accepted += new_accepted
    stages["receive"] = time.perf_counter() - clock
    if len(accepted) < config.min_sites:
        message = (f"{len(accepted)} valid bundles, fewer than min-sites={config.min_sites}; the bundles received "
                   f"are kept: continue with `coordinator run --resume {run_dir}`")
        summary = report.build_summary(config, run_id, outcomes, None, info, None, stages, "failed", message)
        report.write_results(run_dir, summary, None, info)
        raise FederationError(message)

    clock = time.perf_counter()
    pooled = pool(accepted)
    model = train_global(pooled, spec, config.train_settings(), resolve_device(config.device))
    torch.save(model.state_dict(), run_dir / "global_model.pt")
    stages["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    site_of = {o.node_id: o.site_id for o in outcomes if o.status == "accepted"}
    site_of.update({b.node_id: b.site_id for b in bindings.values() if b.site_id and b.node_id not in site_of})
    evaluate_request = EvaluateRequest(run_id=run_id, dataset=info.name, model=spec)
    content = RecordDict({RecordKey.ARRAYS: ArrayRecord(model.state_dict()),
                          RecordKey.REQUEST: ConfigRecord({FieldKey.REQUEST_JSON: evaluate_request.model_dump_json()})})
    delivered_before = {o.node_id for o in outcomes if o.status == "accepted"}
    evaluators = [node for node in node_ids if node in replies or node in delivered_before]  # every site that answered
    eval_replies = exchange(grid, {node: content for node in evaluators}, "evaluate", config.evaluate_timeout)
    evaluations = [_site_evaluation(node, site_of.get(node), reply, info.num_classes)
                   for node, reply in eval_replies.items()]
    evaluation = aggregate(evaluations, info.num_classes)
    stages["evaluate"] = time.perf_counter() - clock

    summary = report.build_summary(config, run_id, outcomes, pooled, info, evaluation, stages, "completed")
    report.write_results(run_dir, summary, pooled, info)
    log.info("run %s completed: pooled over %d test images: accuracy %.3f, balanced accuracy %.3f, AUC %.3f; "
             "results in %s", run_id, evaluation.num_examples, evaluation.pooled.accuracy,
             evaluation.pooled.balanced_accuracy, evaluation.pooled.auc, run_dir)
    return summary


def _key(binding: NodeBinding) -> str:
    """Where a node's request and bundle are kept: its site id, or ``node-<id>`` for an unnamed (simulated) node."""
    return binding.site_id or f"node-{binding.node_id}"


def _node_infos(grid: Grid, node_ids: list[int]) -> list[Any]:
    """Flower's NodeInfo (name, public key) of the connected nodes; bare ids where the grid has no more."""
    wanted = set(node_ids)
    return [n for n in grid.get_nodes() if n.node_id in wanted]


def _coordinator_keys(config: RunConfig, run_dir: Path, num_nodes: int) -> CoordinatorKeys:
    if config.keys_dir:
        return load_coordinator_keys(Path(config.keys_dir).expanduser())
    site_ids = [simulated_site_id(i) for i in range(max(config.sites, num_nodes))]
    return load_coordinator_keys(create_simulation_keys(run_dir / SIMULATION_KEYS, site_ids))


def _request_record(request: DistillRequest) -> RecordDict:
    return RecordDict({RecordKey.REQUEST: ConfigRecord({FieldKey.REQUEST_JSON: request.model_dump_json()})})


def _sealed_bytes(reply: Message) -> bytes:
    """The sealed bundle of a reply, which must carry exactly one bytes field and numbers only."""
    record = reply.content.config_records.get(RecordKey.BUNDLE)
    sealed = None if record is None else record.get(FieldKey.SEALED)
    if not isinstance(sealed, bytes) or set(record.keys()) != {FieldKey.SEALED}:
        raise InvalidBundle("reply carries no sealed bundle (or more than one field)")
    return sealed


def _store_sealed(run_dir: Path, site_key: str, reply: Message) -> None:
    """Keep every received bundle, still encrypted, as it arrives."""
    if not reply.has_error() and reply.has_content():
        try:
            run_state.store_bundle(run_dir, site_key, _sealed_bytes(reply))
        except InvalidBundle:
            pass  # reported when the reply is received


def _reverify_stored(
    run_dir: Path,
    state: run_state.RunState,
    bindings: Mapping[int, NodeBinding],
    image_shape: tuple[int, int, int],
    num_classes: int,
    keys: CoordinatorKeys,
    max_bytes: int,
) -> tuple[list[SiteOutcome], list[OpenedBundle], set[str]]:
    """Open again every bundle a stopped run stored; the valid ones count as delivered (empty for a new run)."""
    node_of = {_key(b): b.node_id for b in bindings.values()}
    outcomes: list[SiteOutcome] = []
    accepted: list[OpenedBundle] = []
    delivered: set[str] = set()
    for key, sealed in run_state.stored_bundles(run_dir, state).items():
        expected_site = None if key.startswith("node-") else key
        expectation = Expectation(state.requests[key], image_shape, num_classes, max_bytes, expected_site)
        try:
            opened = receive_bundle(sealed, expectation, keys, {o.site_id for o in outcomes})
        except FedDistillError as exc:
            log.warning("stored bundle of %s no longer verifies (%s); asking again", key, exc)
            continue
        delivered.add(key)
        accepted.append(opened)
        outcomes.append(SiteOutcome(node_of.get(key), opened.manifest.site_id, "accepted",
                                    "delivered before the run was resumed", opened.sealed_bytes))
    return outcomes, accepted, delivered


def _never_connected(keys: CoordinatorKeys, bindings: Mapping[int, NodeBinding], config: RunConfig) -> list[SiteOutcome]:
    """Trusted sites with no connected node (deployment only: simulated sites are not in a trust store)."""
    if not config.keys_dir:
        return []
    connected = {b.site_id for b in bindings.values() if b.usable}
    return [SiteOutcome(None, site, "missing", f"never connected within {config.node_wait_timeout:.0f} s")
            for site in sorted(keys.sites) if site not in connected]


def _receive_all(
    node_ids: list[int],
    replies: Mapping[int, Message],
    expectations: Mapping[int, Expectation],
    keys: CoordinatorKeys,
    config: RunConfig,
    delivered: set[str | None],
) -> tuple[list[SiteOutcome], list[OpenedBundle]]:
    """Accept or reject each node's reply; one bad site never stops the others."""
    outcomes: list[SiteOutcome] = []
    accepted: list[OpenedBundle] = []
    delivered = {site for site in delivered if site}
    for node in node_ids:
        reply = replies.get(node)
        expected_site = expectations[node].site_id
        if reply is None:
            outcomes.append(SiteOutcome(node, expected_site, "missing",
                                        f"no reply within {config.distill_timeout:.0f} s (dropped out or too slow)"))
        elif reply.has_error():
            outcomes.append(SiteOutcome(node, expected_site, "rejected", f"site reported an error: {reply.error.reason}"))
        else:
            metrics = dict(reply.content.metric_records.get(RecordKey.METRICS, {}))
            sealed = b""
            try:
                sealed = _sealed_bytes(reply)
                opened = receive_bundle(sealed, expectations[node], keys, delivered)
            except FedDistillError as exc:
                outcomes.append(SiteOutcome(node, expected_site, "rejected", str(exc), len(sealed), metrics))
            else:
                delivered.add(opened.manifest.site_id)
                accepted.append(opened)
                outcomes.append(SiteOutcome(node, opened.manifest.site_id, "accepted", "", opened.sealed_bytes, metrics))
        outcome = outcomes[-1]
        level = logging.INFO if outcome.status == "accepted" else logging.WARNING
        log.log(level, "node %d (site %s): %s %s", node, outcome.site_id or "?", outcome.status, outcome.reason)
    return outcomes, accepted


def _site_evaluation(node: int, site_id: str | None, reply: Message, num_classes: int) -> SiteEvaluation:
    """A site's counts, parsed at the door; a site that failed or sent nonsense is kept with the reason."""
    site = site_id or f"node-{node}"
    if reply.has_error():
        log.warning("node %d could not evaluate the global model: %s", node, reply.error.reason)
        return SiteEvaluation(site, node, None, f"site reported an error: {reply.error.reason}")
    try:
        counts = parse_site_counts(reply.content.metric_records.get(RecordKey.METRICS, {}), num_classes)
    except InvalidReply as exc:
        log.warning("node %d: evaluation rejected: %s", node, exc)
        return SiteEvaluation(site, node, None, f"rejected: {exc}")
    return SiteEvaluation(site, node, counts, "" if counts.num_examples else "holds no test images")


app = build_server_app()
