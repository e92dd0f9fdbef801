"""Scoring the global model where the real images are: tuning counts on the sites' training images
(``query.tune``) and evaluation counts on their test images (``evaluate``), each pooled only within what
the site committed in its signed manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid
from pydantic import ValidationError

from coordinator.evaluate import EvalReport, SiteEvaluation, aggregate, parse_site_counts
from coordinator.federation import Federation, request_record
from coordinator.imbalance import TUNING_SCALES
from coordinator.messaging import exchange
from coordinator.pool import Commitment
from coordinator.train import GlobalModels
from shared.errors import InvalidReply
from shared.schemas import EvaluateRequest, MetricKey, TrainingSpec, TuneReply, TuneRequest
from shared.untrusted import untrusted_text
from shared.wire import MessageKind, RecordKey

log = logging.getLogger(__name__)


def tune_at_sites(
    grid: Grid, federation: Federation, models: GlobalModels, node_ids: list[int], site_of: Mapping[int, str],
    commitments: Mapping[str, Commitment], pool: list[bytes],
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
                                     model=federation.spec, training=_training(federation),
                                     shift=models.shift.tolist(), committed_counts=list(committed.train))
    timeout = federation.config.evaluate_timeout
    replies = exchange(grid, {node: request_record(request, pool=pool) for node, request in requests.items()},
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
    commitments: Mapping[str, Commitment], pool: list[bytes],
) -> dict[str, EvalReport]:
    """Pooled metrics of the global model (``global``) and, when it is corrected, of the uncorrected one.

    Each site scores the model it trains itself on ``pool`` (the signed sets), corrected as the request says:
    the coordinator sends no weights. Only a site that committed test counts is asked; its counts are pooled
    within them (``aggregate``).
    """
    request = {"run_id": federation.state.run_id, "dataset": federation.info.name, "model": federation.spec,
               "training": _training(federation)}
    variants = {"global": EvaluateRequest(**request, **_correction(models))}
    if models.model is not models.uncorrected:
        variants["uncorrected"] = EvaluateRequest(**request)
    committed = {node for node in node_ids
                 if (c := commitments.get(site_of.get(node, f"node-{node}"))) is not None and c.test is not None}
    unasked = [SiteEvaluation(site_of.get(node, f"node-{node}"), node, None,
                              "not asked: committed no test counts (no set in the pool, or its policy withholds "
                              "class counts)") for node in node_ids if node not in committed]
    asked = [node for node in node_ids if node in committed]
    timeout = federation.config.evaluate_timeout
    reports = {}
    for name, variant in variants.items():
        content = request_record(variant, pool=pool)
        replies = exchange(grid, {node: content for node in asked}, MessageKind.EVALUATE, timeout)
        evaluations = [_site_evaluation(node, site_of.get(node), replies.get(node), federation.info.num_classes,
                                        timeout) for node in asked]
        reports[name] = aggregate(evaluations + unasked, federation.info.num_classes, commitments)
    return reports


def _training(federation: Federation) -> TrainingSpec:
    return TrainingSpec.of(federation.config.train_settings())


def _correction(models: GlobalModels) -> dict[str, Any]:
    """How the global model differs from the uncorrected one, as a scoring request says it: the scaled logit
    shift, or the class weights it was trained with (nothing when it is not corrected)."""
    if models.model is models.uncorrected:
        return {}
    if models.class_weights is not None:
        return {"class_weights": [float(w) for w in models.class_weights]}
    assert models.shift is not None, "a corrected model is either reweighted or logit-adjusted"
    return {"shift": [float(v) for v in models.scale * models.shift]}


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
