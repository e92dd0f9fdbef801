"""The coordinator as a Flower ServerApp: the wiring of a run. ``run_federation`` reads as the pipeline, each
stage a module of its own (``federation``: connect; ``collect``: ask and receive; ``pool``, ``train``;
``scoring``: tune and evaluate at the sites; ``report``):

connect (wait for sites, bind each node to its registered site) -> collect (stored bundles re-verified
when resuming; ``query.distill`` with a fresh nonce to every other site; each reply decrypted, verified
and validated, and stored as it arrives) -> pool -> train (corrected for the sites' class mix) -> tune
that correction (``query.tune``: counts on the sites' training images) -> evaluate (``evaluate`` at every
site that answered; their counts summed) -> report. Tune and evaluate send the pooled signed sets, not
weights: each site trains the model it scores itself (``site_agent.scored_model``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator import report, run_state
from coordinator.collect import ask_sites, receive_replies, remember_awaiting_approval
from coordinator.federation import Federation, connect, forwarded_pool, model_bytes, previous_round
from coordinator.imbalance import real_class_prior
from coordinator.pool import PooledSet, pool
from coordinator.receive import OutcomeStatus
from coordinator.scoring import evaluate_at_sites, tune_at_sites
from coordinator.summary import BytesMoved, RoundRecord, RunStatus, RunSummary, build_summary
from coordinator.train import GlobalModels, train_corrected
from shared.bundle import OpenedBundle
from shared.config import RunConfig, resolve_device
from shared.errors import FederationError
from shared.logs import configure_logging
from shared.models import ConvNet

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


@contextmanager
def timed(stage: str, seconds: dict[str, float]) -> Iterator[None]:
    """Add the wall time of one stage of the run to ``seconds[stage]`` (summed over rounds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def run_federation(grid: Grid, config: RunConfig, run_dir: Path) -> RunSummary:
    """Every round of a run (or the rest of a stopped one); writes the results folder and returns the summary.

    Raises:
        FederationError: too few sites connected or delivered a valid bundle (the summary says who and why).
        ConfigError: a new run in a folder holding one, or a resume without a stopped run.
    """
    stages: dict[str, float] = {}
    with timed("connect", stages):
        federation = connect(grid, config, run_dir)
    config, state = federation.config, federation.state
    previous, global_model = previous_round(federation)
    summary, accepted, models = run_round(grid, federation, global_model, previous, stages)
    while state.round < config.rounds:
        last = summary.rounds[-1]
        log.info("round %d of %d done: balanced accuracy %s, AUC %s", state.round, config.rounds,
                 last.global_model.balanced_accuracy, last.global_model.auc)
        state.next_round(last)
        run_state.save(run_dir, state)
        previous, global_model = {b.manifest.site_id: b for b in accepted}, models.model
        summary, accepted, models = run_round(grid, federation, global_model, previous, stages)
    pooled = summary.rounds[-1].global_model
    log.info("run %s completed after %d round(s): pooled over %d test images: accuracy %s, balanced accuracy %s, "
             "AUC %s; results in %s", state.run_id, state.round, pooled.num_examples, pooled.accuracy,
             pooled.balanced_accuracy, pooled.auc, run_dir)
    return summary


def run_round(
    grid: Grid,
    federation: Federation,
    global_model: ConvNet | None,
    previous: Mapping[str, OpenedBundle],
    stages: dict[str, float],
) -> tuple[RunSummary, list[OpenedBundle], GlobalModels]:
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
    remember_awaiting_approval(federation, outcomes)
    fresh = {b.manifest.site_id for b in accepted}
    carried = [bundle for site, bundle in sorted(previous.items()) if site not in fresh]
    if carried:
        log.warning("round %d: %d sites delivered no new set; their round %d sets stay in the pool",
                    state.round, len(carried), state.round - 1)
    pooled_sets = accepted + carried
    bytes_moved = {"up": sum(o.bundle_bytes for o in outcomes), "down": model_bytes(global_model) * len(requests)}
    if len(pooled_sets) < config.min_sites:
        waiting = sum(o.status == OutcomeStatus.AWAITING_APPROVAL for o in outcomes)
        held = f" ({waiting} sites' releases await their operators' approval: see approval-wait-s)" if waiting else ""
        message = (f"{len(pooled_sets)} valid bundles, fewer than min-sites={config.min_sites}{held}; the bundles "
                   f"received are kept: continue with `coordinator run --resume {federation.run_dir}`")
        summary = build_summary(config, state.run_id, outcomes, None, info, None, stages, RunStatus.FAILED, message)
        report.write_results(federation.run_dir, summary, None, info)
        raise FederationError(message)
    # Every site that answered is listed; only those whose set is in the pool committed counts (coordinator.pool),
    # so only they are asked to tune and score: a site whose bundle was rejected is listed as not asked.
    delivered = {o.node_id: o.site_id for o in outcomes if o.status == OutcomeStatus.ACCEPTED and o.site_id}
    site_of = {b.node_id: b.site_id for b in federation.bindings.values() if b.site_id} | delivered
    evaluators = [n for n in federation.node_ids if n in replies or n in delivered]
    with timed("train", stages):
        pooled, models = pool_and_train(federation, pooled_sets)
    forwarded = forwarded_pool(federation, pooled_sets)  # what each site trains the model it scores on
    pool_bytes = sum(len(s) for s in forwarded)
    tuning = None
    if models.needs_tuning:
        with timed("tune", stages):
            models, tuning = tune_at_sites(grid, federation, models, evaluators, site_of, pooled.commitments,
                                           forwarded)
        bytes_moved["down"] += pool_bytes * len(evaluators)
    torch.save(models.model.state_dict(), federation.run_dir / "global_model.pt")
    with timed("evaluate", stages):
        evaluations = evaluate_at_sites(grid, federation, models, evaluators, site_of, pooled.commitments, forwarded)
    bytes_moved["down"] += pool_bytes * len(evaluators) * len(evaluations)
    summary = build_summary(config, state.run_id, outcomes, pooled, info, evaluations, stages, RunStatus.COMPLETED,
                            correction=models.correction.value, tuning=tuning)
    assert summary.global_model is not None, "a scored round has the global model's evaluation"
    earlier = state.history[-1].bytes.cumulative if state.history else 0
    summary.round = state.round
    summary.bytes = BytesMoved(**bytes_moved, cumulative=earlier + bytes_moved["up"] + bytes_moved["down"])
    record = RoundRecord(round=state.round, bytes=summary.bytes, sites_accepted=summary.sites_accepted,
                         global_model=summary.global_model, uncorrected=summary.uncorrected)
    summary.rounds = [*state.history, record]
    report.write_results(federation.run_dir, summary, pooled, info)
    return summary, accepted, models


def pool_and_train(federation: Federation, accepted: list[OpenedBundle]) -> tuple[PooledSet, GlobalModels]:
    """Pool the accepted sets and train the global model on them, corrected by the released class counts."""
    pooled = pool(accepted)
    config = federation.config
    prior = real_class_prior(accepted, federation.info.num_classes)
    models = train_corrected(pooled, federation.spec, config.train_settings(), resolve_device(config.device),
                             config.imbalance, prior)
    return pooled, models


app = build_server_app()
