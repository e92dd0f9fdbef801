"""What a site does for each kind of request, as plain functions (no Flower types).

``answer_distill``: (approval, when the policy asks: a decided request is answered from the approvals
folder, before any work) -> the coordinator's budgets (``site_agent.budget``: release attempts, one per run
and round, the DP ledger) -> load local data -> distill -> withhold near copies -> privacy report and gate
-> seal -> (held for approval) -> (sealed bundle, metrics). Evaluate and tune answers are counted against the
budgets too.
``prepare_release``: the same up to the seal; ``site-agent distill`` previews a release with it.
``answer_evaluate``: verify the pooled sets -> train the global model on them here (``site_agent.scored_model``)
-> score it on local test data -> noisy summable counts (no per-image value).
``answer_tune``: the same model -> what it predicts on local training data under each candidate class-imbalance
correction -> its noisy right predictions per scale of the published grid (no per-image value).

Each step is recorded in the site's audit log (``site_agent.audit``): the request, the set built, its
privacy report, the decision and the release.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.config import resolve_device
from shared.errors import ConfigError, InvalidBundle, PolicyError
from shared.manifest import PrivacySummary
from shared.methods import InitMode
from shared.models import ConvNet
from shared.pooled_training import adjust_logits
from shared.schemas import DistillRequest, EvaluateRequest, MetricKey, TuneRequest
from shared.training import model_counts
from site_agent import audit
from site_agent.approval import ReleaseApproval, approval_for
from site_agent.audit import AuditEvent
from site_agent.budget import Spend, coordinator_id, free_round, spend_answer, take_release
from site_agent.data import load_site_images
from site_agent.distill import SyntheticSet, distill
from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.evaluate import check_spec, evaluation_answer, load_global_model, tuning_answer, tuning_counts
from site_agent.identity import load_site_identity
from site_agent.labelled import LabelledImages, SiteImages
from site_agent.policy import SitePolicy
from site_agent.privacy.gate import ReleaseBlocked, blocking_reasons, enforce, limit_names
from site_agent.privacy.near_copy import nearest_real_similarities
from site_agent.privacy.page import headline, privacy_report_folder, summary_lines, write_report
from site_agent.privacy.report import ShadowSettings, measure_privacy
from site_agent.privacy.seed import report_seed
from site_agent.release import SealedRelease, seal_described
from site_agent.rounds import keep_released_set, previous_set
from site_agent.scored_model import scored_model, verified_pool
from site_agent.settings import SiteSettings

log = logging.getLogger(__name__)


def answer_distill(
    request: DistillRequest,
    settings: SiteSettings,
    progress: bool = True,
    approval: ReleaseApproval | None = None,
    global_model: Mapping[str, torch.Tensor] | None = None,
) -> tuple[bytes, dict[str, float]]:
    """Distill the site's training images as requested, seal the result and, if the policy says so, hold it.

    With approval required, the request (run id and nonce) is looked up first: an approved release is
    sent as stored, and a held or rejected one is refused, without loading data or distilling again.
    ``approval`` overrides the policy's default approval hook (``site_agent.approval``). From round 2,
    ``global_model`` holds the weights the request's ``global_model`` spec describes.

    Raises:
        PolicyError, KeyFileError, DataError, ConfigError: with messages safe to send to the coordinator.
        ApprovalPending: the policy requires approval and the release has not been approved.
        ReleaseRejected: the site's reviewer rejected the release this request asks for.
    """
    cache = settings.cache_dir
    audit.record(cache, AuditEvent.REQUEST_RECEIVED, request, "coordinator", method=request.distill.method.value,
                 ipc=request.distill.ipc, round=request.round, dataset=request.dataset)
    approval = (approval or approval_for(settings)) if settings.policy.require_approval else None
    stored = approval.decided(request) if approval is not None else None  # before any work
    if stored is not None:
        sealed, metrics = stored
    else:
        try:
            release, metrics = _attempt(request, settings, progress, global_model)
        except PolicyError as exc:  # limits, budgets, a near copy, or the privacy limits: nothing sealed
            why = f"{exc}: {exc.local_detail}" if exc.local_detail else str(exc)  # the figures stay in this log
            audit.record(cache, AuditEvent.DECISION, request, "policy", decision="blocked", why=why[:1000])
            raise
        if approval is not None:
            approval.hold(release, request, metrics)
        audit.record(cache, AuditEvent.DECISION, request, "policy", decision="approved", why="no review required")
        sealed = release.sealed
    audit.record(cache, AuditEvent.RELEASE, request, "site-agent", sha256=hashlib.sha256(sealed).hexdigest(),
                 bytes=len(sealed))
    return sealed, metrics


def _attempt(
    request: DistillRequest, settings: SiteSettings, progress: bool, global_model: Mapping[str, torch.Tensor] | None,
) -> tuple[SealedRelease, dict[str, float]]:
    """One release attempt for the coordinator: policy caps, then the budgets (``site_agent.budget``: counted,
    its (run, round) taken, a dpdm release's epsilon charged), before any data is read; then the release.

    An attempt that ends with nothing sealed gives its (run, round) back; what it spent stays spent.
    """
    settings.policy.check(request)  # a request over a cap spends nothing
    coordinator = coordinator_id(settings.site_id, settings.key_dir)
    take_release(settings.cache_dir, coordinator, request, settings.policy)
    try:
        return prepare_release(request, settings, progress, global_model)
    except BaseException:
        free_round(settings.cache_dir, coordinator, request)
        raise


def prepare_release(
    request: DistillRequest,
    settings: SiteSettings,
    progress: bool = True,
    global_model: Mapping[str, torch.Tensor] | None = None,
) -> tuple[SealedRelease, dict[str, float]]:
    """Policy check, local data, distillation, near-copy check, seal: a release ready to send, and its metrics.

    From round 2 the site refines the set it released last round (``site_agent.rounds``) against the
    global model as well as fresh random networks. The policy's ``max_seconds`` counts from here, over the
    distillation and the privacy report together; nothing is sealed once it has passed.

    Raises:
        PolicyError, KeyFileError, DataError, ConfigError: with messages safe to send to the coordinator.
        TimeLimitReached: the request ran into the policy's ``max_seconds``; nothing was sealed.
    """
    time_limit = Deadline.after(settings.policy.max_seconds)
    settings.policy.check(request)
    identity = load_site_identity(settings.site_id, settings.key_dir)  # fail before hours of work
    images = load_site_images(request.dataset, settings.data_root, settings.verify_md5)
    device = resolve_device(settings.device)
    log.info(
        "site %s: distilling %s with %s, ipc=%d, %d iterations on %s (%d local training images)",
        settings.site_id, request.dataset, request.distill.method.value, request.distill.ipc,
        request.distill.iterations, device, len(images.train),
    )
    refine = {}
    if request.global_model is not None:
        if global_model is None:
            raise ConfigError(f"the round {request.round} request came without the global model's weights")
        refine = {"start_from": previous_set(settings.cache_dir, request.run_id),
                  "guide": load_global_model(global_model, request.global_model)}
    synthetic = distill(
        images.train, images.info.num_classes, request.distill, device,
        progress=progress, min_real_per_class=settings.policy.min_real_per_class,
        expert_cache_dir=settings.cache_dir / "experts", site_id=settings.site_id, time_limit=time_limit,
        soft_labels=request.soft_labels if settings.policy.release_soft_labels else None, **refine,
    )
    audit.record(settings.cache_dir, AuditEvent.SET_BUILT, request, "site-agent", method=request.distill.method.value,
                 images=len(synthetic.labels), seconds=round(synthetic.seconds, 3),
                 sha256=hashlib.sha256(synthetic.images.numpy().tobytes()).hexdigest())
    released = without_near_copies(synthetic, images.train, settings.policy, request.distill.init)
    if len(released.labels) < len(synthetic.labels):
        audit.record(settings.cache_dir, AuditEvent.DECISION, request, "policy", decision="withheld near copies",
                     images=len(synthetic.labels) - len(released.labels), limit=settings.policy.max_real_similarity)
    synthetic = released
    privacy = report_privacy(synthetic, images, request, settings, device, time_limit)
    time_limit.check()  # the last point before anything is sealed
    started = time.perf_counter()
    policy = settings.policy
    # A differentially private set may carry only the mechanism's noisy counts, never the true ones.
    num_classes = images.info.num_classes
    counts = ([synthetic.dp.noisy_class_counts.get(c, 0) for c in range(num_classes)] if synthetic.dp
              else images.train.class_counts(num_classes))
    release = seal_described(
        synthetic, request, identity, images.info, num_real_examples=sum(counts),
        real_class_counts=policy.released_class_counts(counts),
        real_class_counts_rounding=policy.class_count_rounding,
        real_test_class_counts=policy.released_class_counts(images.test.class_counts(num_classes)),
        # The report is measured on the training images outside ε: a DP release keeps it at the site.
        privacy=None if synthetic.dp else privacy,
        preprocessing=images.preprocessing,
    )
    sealed = release.sealed
    keep_released_set(settings.cache_dir, request.run_id, synthetic)
    metrics = {
        MetricKey.NUM_EXAMPLES.value: float(sum(counts)),
        MetricKey.DISTILL_SECONDS.value: synthetic.seconds,
        MetricKey.SEAL_SECONDS.value: time.perf_counter() - started,
        MetricKey.PRIVACY_SECONDS.value: privacy.seconds if privacy else 0.0,
        MetricKey.BUNDLE_BYTES.value: float(len(sealed)),
        MetricKey.SYNTHETIC_IMAGES.value: float(len(synthetic.labels)),
    }
    log.info("site %s: sealed %d synthetic images in a %d-byte bundle", settings.site_id,
             len(synthetic.labels), len(sealed))
    return release, metrics


def without_near_copies(
    synthetic: SyntheticSet, train: LabelledImages, policy: SitePolicy, init: InitMode
) -> SyntheticSet:
    """The set without its near copies of local images: each synthetic image whose closest local image correlates
    above the policy's ``max_real_similarity`` (no check for an allowed real init, which copies them by design).

    The rest goes out when the policy's ``withhold_near_copies`` allows it: the limit is a bound on every released
    image, not a verdict on the others. A class that loses every image is left out, as a class too small to distil.

    Raises:
        ReleaseBlocked: near copies, and the policy refuses the whole set, or every image is one, or the set is
            differentially private (its guarantee covers the set as distilled, not a choice made by looking at the
            real images). Its message, like every privacy block's, gives no figure: the site's log and audit log do.
    """
    similarity = nearest_real_similarities(synthetic.images, torch.from_numpy(train.images))
    limit, closest = policy.max_real_similarity, float(similarity.max())
    log.info("closest synthetic/real image correlation: %.3f (limit %.2f)", closest, limit)
    near = similarity > limit
    if init == InitMode.REAL or not near.any():
        return synthetic
    why = (f"max_real_similarity: {int(near.sum())} of {len(near)} synthetic images are near copies of local images "
           f"(closest correlation {closest:.3f}, limit {limit})")
    if not policy.withhold_near_copies or synthetic.dp is not None or near.all():
        raise ReleaseBlocked(["max_real_similarity"], reasons=[why])
    log.warning("withholding near copies: %s", why)
    return synthetic.only(~near)


def report_privacy(
    synthetic: SyntheticSet, images: SiteImages, request: DistillRequest, settings: SiteSettings, device: torch.device,
    time_limit: Deadline = NO_LIMIT,
) -> PrivacySummary | None:
    """Measure the set's privacy report, write it at the site, and hold the release to the policy's limits.

    Returns the summary to sign into the manifest (None when the policy turns the report off).

    Raises:
        ReleaseBlocked: the report breaks a limit; the full report is still written for the reviewer.
        TimeLimitReached: the request's ``time_limit`` passed while the report was measured.
    """
    limits = settings.policy.privacy
    if not limits.report:
        return None
    shadows = ShadowSettings(min_real_per_class=settings.policy.min_real_per_class)
    seed = report_seed(settings.cache_dir, synthetic.images, synthetic.labels)  # the site's, never the request's
    report = measure_privacy(synthetic, images, limits, device, shadows, seed=seed, time_limit=time_limit)
    reasons = blocking_reasons(report.summary, limits)  # limit -> why, with its figure: site-local
    failed = list(reasons)
    folder = privacy_report_folder(settings.cache_dir, request.run_id, request.nonce)
    report_json, page = write_report(report, synthetic, images.info.label_names, limits, failed, folder,
                                     reasons=list(reasons.values()))
    audit.record(settings.cache_dir, AuditEvent.PRIVACY_REPORT, request, "site-agent", **headline(report.summary),
                 passed=[n for n in limit_names(limits) if n not in failed], failed=failed,
                 why=list(reasons.values()), report=str(report_json))
    for line in summary_lines(report.summary):
        log.info("site %s privacy report: %s", settings.site_id, line)
    log.info("site %s: privacy report at %s", settings.site_id, page)
    enforce(report.summary, limits, str(page))
    return report.summary


def answer_evaluate(request: EvaluateRequest, pool: Sequence[bytes], settings: SiteSettings) -> dict[str, int | list[int]]:
    """Counts (``EvaluateReply``) on the site's test images of the global model the site trains itself on the
    pooled sets (``site_agent.scored_model``), corrected as the request says: no per-image value.

    Raises:
        PolicyError: the run, or the coordinator (``site_agent.budget``), has had the evaluations the policy allows;
            or the pool holds a set this site does not trust (``UntrustedPool``).
    """
    settings.policy.check_scored_model(request.model, request.training)
    _spend(settings, Spend.EVALUATION, request.run_id)
    images = load_site_images(request.dataset, settings.data_root, settings.verify_md5)
    model, sites = _pooled_model(request, pool, settings, images)
    if request.shift is not None:
        adjust_logits(model, np.array(request.shift))
    counts = model_counts(model, images.test.images, images.test.labels, request.model.num_classes,
                          resolve_device(settings.device))
    if counts.num_examples == 0:
        log.warning("site %s holds no test images: reporting empty counts", settings.site_id)
    # The site's own record of how this run's model did here (`site-agent history`); exact, since it stays here.
    audit.record(settings.cache_dir, AuditEvent.EVALUATED, _Scored(request.run_id), "site-agent",
                 test_images=counts.num_examples, pooled_sites=sites, **{name: _finite(value) for name, value in (
                     ("accuracy", counts.accuracy()), ("balanced_accuracy", counts.balanced_accuracy()),
                     ("auc", counts.auc()))})
    return evaluation_answer(counts, settings.policy).to_metrics()  # noisy, within its committed test counts


def answer_tune(request: TuneRequest, pool: Sequence[bytes], settings: SiteSettings) -> dict[str, int | list[int]]:
    """Counts (``TuneReply``): the site's training images per class and, for each scale of the published grid,
    the right predictions of the global model the site trains itself on the pooled sets, with ``scale * shift``
    added to its logits; noisy as the policy says (``site_agent.evaluate``). The test images stay out of it.

    Raises:
        PolicyError: the policy withholds tuning counts, the run or the coordinator has had what it allows, or the
            pool holds a set this site does not trust.
    """
    if not settings.policy.release_tuning_counts:
        raise PolicyError("this site's policy withholds tuning counts (release_tuning_counts)")
    settings.policy.check_scored_model(request.model, request.training)
    _spend(settings, Spend.TUNING, request.run_id)
    images = load_site_images(request.dataset, settings.data_root, settings.verify_md5)
    model, sites = _pooled_model(request, pool, settings, images)
    class_counts, hits = tuning_counts(model, images.train, np.array(request.shift), resolve_device(settings.device),
                                       request.model.num_classes)
    audit.record(settings.cache_dir, AuditEvent.TUNING_COUNTS, _Scored(request.run_id), "site-agent",
                 training_images=len(images.train.labels), scales=len(hits), pooled_sites=sites)
    return tuning_answer(class_counts, hits, settings.policy, request.committed_counts).to_metrics()


def _pooled_model(
    request: EvaluateRequest | TuneRequest, pool: Sequence[bytes], settings: SiteSettings, images: SiteImages
) -> tuple[ConvNet, list[str]]:
    """The global model the site trains itself on the request's verified pool (within its time limit), and whose
    sets it holds.

    Raises:
        PolicyError: the request's model is not this dataset's global model, or a set is not one the site trusts.
        InvalidBundle: a set does not verify or parse.
        TimeLimitReached: the training ran past the policy's ``max_seconds``.
    """
    check_spec(request.model, images.info)
    identity = load_site_identity(settings.site_id, settings.key_dir)
    try:
        sets = verified_pool(pool, request, settings.site_id, identity.signing_key.public_key(), settings.key_dir,
                             settings.policy)
    except (PolicyError, InvalidBundle) as exc:  # what a hostile coordinator tried stays in the site's record
        audit.record(settings.cache_dir, AuditEvent.POOL_REFUSED, _Scored(request.run_id), "policy",
                     why=str(exc)[:1000])
        raise
    time_limit = Deadline.after(settings.policy.max_seconds)
    model = scored_model(sets, request, settings.cache_dir, resolve_device(settings.device), time_limit.check)
    return model, sorted(site for site, *_ in sets)


def _spend(settings: SiteSettings, kind: Spend, run_id: str) -> None:
    """Count one evaluate or tune answer against the coordinator's budgets, before it is computed.

    Raises:
        PolicyError: a budget, or the run's ``max_evaluations_per_run``, is spent (named).
    """
    coordinator = coordinator_id(settings.site_id, settings.key_dir)
    spend_answer(settings.cache_dir, coordinator, kind, run_id, settings.policy)


@dataclass(frozen=True)
class _Scored:
    """What an evaluation's audit entry is about: the run (an evaluate request carries no nonce)."""

    run_id: str
    nonce: str = ""


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None
