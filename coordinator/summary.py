"""summary.json, typed: ``RunSummary`` is what a run's results folder says happened, and how it is built.

The coordinator writes it (``build_summary``; the round's bytes and history added by ``server_app``, the
random-subset yardstick by the simulation harness); report.md, report.html, ``coordinator results`` and
``status``, the harness and the tests read it back with :func:`read_summary` (or
``RunSummary.model_validate_json``) and use its attributes, never string keys.

``schema_version`` says which shape a file has. A change a reader written earlier could not read (a field
removed, renamed or given another meaning) raises it; a new optional field does not. A file without it was
written before summaries were versioned and is refused with the file's name and the version expected.

Parts built here forbid unknown fields, so a typo fails a test. Parts converted from other modules' results
(the pooled metrics of ``coordinator.evaluate`` and the tuning of ``coordinator.scoring``) allow extra fields,
so a figure those modules add later reaches summary.json before it is given a field here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from coordinator.evaluate import EvalReport, Metrics
from coordinator.pool import PooledSet
from coordinator.receive import OutcomeStatus, SiteOutcome
from shared.config import RunConfig
from shared.datasets import DatasetInfo
from shared.errors import FedDistillError
from shared.manifest import DPGuarantee, Preprocessing, PrivacySummary
from shared.methods import SoftLabelSpec
from shared.software import software_versions

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"


def _nan_to_none(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


# A figure undefined for the counts at hand (NaN: the AUC of one class) is None, in memory as in the file.
Figure = Annotated[float | None, BeforeValidator(_nan_to_none)]


class _Part(BaseModel):
    """A part this module builds: unknown fields are refused. ``global`` is a Python keyword, hence the alias."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)


class _Converted(_Part):
    """A part converted from another module's result: a field it adds later is kept (see the module docstring)."""

    model_config = ConfigDict(extra="allow")


class SummaryError(FedDistillError):
    """A summary.json that cannot be read: missing, not JSON, of another schema version, or malformed."""

    hint = "summary.json is written by the run itself: rerun it, or read the file with the feddistill that wrote it"


class RunStatus(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    FAILED = "failed"  # the summary's ``error`` says why
    INTERRUPTED = "interrupted"  # stopped by the operator (Ctrl-C in a simulation)


class SiteEntry(_Part):
    """One site asked for its set: what came of it, and the figures signed into its manifest when accepted."""

    site_id: str | None  # None: a node that never said which site it is
    node_id: int | None  # None: the site never connected
    status: OutcomeStatus
    reason: str = ""
    bundle_bytes: int = 0
    distill_seconds: float | None = None  # the site's own (unsigned) figures beside its bundle
    synthetic_images: float | None = None
    real_train_images: float | None = None  # the manifest's signed figure
    privacy_seconds: float | None = None
    privacy: PrivacySummary | None = None
    dp: DPGuarantee | None = None
    preprocessing: Preprocessing | None = None  # how the site resized its images; None: stored at the run's size
    soft_labels: SoftLabelSpec | None = None  # how the site's teacher labelled its set; None: classes only
    class_counts: dict[int, int] | None = None  # synthetic images per class
    real_class_counts: dict[int, int] | None = None  # real training images per class, when its policy releases them

    @classmethod
    def of(cls, outcome: SiteOutcome) -> SiteEntry:
        metrics = outcome.metrics or {}
        return cls(site_id=outcome.site_id, node_id=outcome.node_id, status=outcome.status, reason=outcome.reason,
                   bundle_bytes=outcome.bundle_bytes, distill_seconds=metrics.get("distill-seconds"),
                   synthetic_images=metrics.get("synthetic-images"), real_train_images=metrics.get("num-examples"),
                   privacy_seconds=metrics.get("privacy-seconds"), privacy=outcome.privacy, dp=outcome.dp,
                   preprocessing=outcome.preprocessing, soft_labels=outcome.soft_labels, class_counts=outcome.class_counts,
                   real_class_counts=outcome.real_class_counts)


class PooledSummary(_Part):
    """The pooled synthetic set the global model was trained on."""

    images: int
    images_per_site: dict[str, int]
    class_counts: dict[str, int]  # by class name


class Figures(_Part):
    """The three figures set side by side: accuracy, balanced accuracy, macro AUC."""

    accuracy: Figure = None
    balanced_accuracy: Figure = None
    auc: Figure = None


class PooledMetrics(_Converted):
    """``coordinator.evaluate.Metrics`` of a model over every answering site's test images (summed counts)."""

    accuracy: Figure
    balanced_accuracy: Figure
    auc: Figure
    auc_error_bound: Figure
    majority_rate: Figure
    recall: list[Figure]  # per class
    class_counts: list[int]
    num_examples: int

    @classmethod
    def of(cls, metrics: Metrics) -> PooledMetrics:
        return cls.model_validate(asdict(metrics))

    def figures(self) -> Figures:
        return Figures(accuracy=self.accuracy, balanced_accuracy=self.balanced_accuracy, auc=self.auc)


class Tuning(_Converted):
    """How the logit adjustment was scaled on the sites' training images (``coordinator.scoring.tune_at_sites``)."""

    scale: float
    sites: int  # sites whose tuning counts were summed (0: the adjustment kept scale 1)
    training_images: int
    accuracy_by_scale: dict[str, float] = {}
    shares: dict[str, float] = {}  # each counted site's share of the tuning images
    rejected: dict[str, str] = {}  # site -> why its counts were left out


class GlobalEvaluation(PooledMetrics):
    """The global model's pooled metrics, its confusion matrix, and the class-imbalance correction it carries."""

    confusion: list[list[int]]  # rows: true class
    class_names: list[str]
    correction: str  # shared.schemas.ImbalanceCorrection's value ("none": uncorrected)
    tuning: Tuning | None = None


class SiteScore(_Converted):
    """One site's answer to ``evaluate``: its own figures, or why there are none (``problem``)."""

    site_id: str
    node_id: int
    problem: str = ""
    epsilon: float | None = None  # the privacy loss of its noisy answer; None: exact counts
    test_share: float | None = None  # of the pooled test images
    prior_share: float | None = None  # of the released class prior
    # Its metrics (``coordinator.evaluate.Metrics``); None where it sent no usable counts.
    accuracy: Figure = None
    balanced_accuracy: Figure = None
    auc: Figure = None
    auc_error_bound: Figure = None
    majority_rate: Figure = None
    recall: list[Figure] | None = None
    class_counts: list[int] | None = None
    num_examples: int | None = None


class BytesMoved(_Part):
    """Bytes on the wire: up (bundles), down (models sent), and every round's so far."""

    up: int
    down: int
    cumulative: int


class RoundRecord(_Part):
    """One round: its bytes, how many sites delivered, and the global model's pooled metrics after it."""

    round: int
    bytes: BytesMoved
    sites_accepted: int
    global_model: GlobalEvaluation = Field(alias="global")
    uncorrected: PooledMetrics | None = None


class Yardstick(_Part):
    """Simulation only: a random real subset of the pooled set's size, trained and scored the same way."""

    images: int
    correction: str
    scale: float
    corrected: Figures
    uncorrected: Figures


class EarlierAttempt(_Part):
    """A stopped attempt of a resumed run, kept in ``attempts/<n>/``."""

    folder: str
    status: str
    sites_accepted: int
    error: str = ""


class RunSummary(_Part):
    """summary.json: one run's sites, pooled set, global model's metrics, rounds and timings."""

    schema_version: Literal[1]
    run_id: str
    status: RunStatus
    error: str = ""
    dataset: str
    method: str
    ipc: int
    iterations: int  # the preset's when the config says 0
    sites_expected: int
    sites_accepted: int = 0
    sites_by_status: dict[OutcomeStatus, int] = {}
    sites: list[SiteEntry] = []
    stage_seconds: dict[str, float] = {}  # wall time per stage, summed over rounds
    finished_at: str  # UTC, ISO 8601
    software: dict[str, str] = {}
    pooled: PooledSummary | None = None
    global_model: GlobalEvaluation | None = Field(None, alias="global")
    uncorrected: PooledMetrics | None = None  # the global model without its correction, when it has one
    per_site: list[SiteScore] = []
    round: int | None = None  # the last round run
    bytes: BytesMoved | None = None  # of that round
    rounds: list[RoundRecord] = []
    yardstick: Yardstick | None = None
    earlier_attempts: list[EarlierAttempt] = []

    @model_validator(mode="before")
    @classmethod
    def _known_version(cls, data: Any) -> Any:
        """Refuse another schema version in words, before pydantic lists every field that differs."""
        if isinstance(data, Mapping) and data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version")
            written = ("has no schema_version (written before summaries were versioned)" if found is None
                       else f"has schema_version {found!r}")
            raise ValueError(f"the summary {written}; this feddistill reads schema_version {SCHEMA_VERSION}")
        return data

    @classmethod
    def begun(cls, config: RunConfig, run_id: str, status: RunStatus, error: str = "") -> RunSummary:
        """What every summary says, before any site answered: the run, its settings, when and by what."""
        return cls(schema_version=SCHEMA_VERSION, run_id=run_id, status=status, error=error, dataset=config.dataset,
                   method=config.method.value, ipc=config.ipc, iterations=config.distill_config().iterations,
                   sites_expected=config.sites, finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   software=software_versions())

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def read_summary(path: Path) -> RunSummary:
    """The summary in ``path`` (a summary.json, or the results folder holding one).

    Raises:
        SummaryError: no such file, not JSON, another schema version, or a field that does not fit (each names the file).
    """
    path = path / SUMMARY_FILE if path.is_dir() else path
    try:
        return RunSummary.model_validate_json(path.read_text())
    except OSError as exc:
        raise SummaryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        problem = first["msg"].removeprefix("Value error, ")
        raise SummaryError(f"{path}: {where + ': ' if where else ''}{problem}") from None


def build_summary(
    config: RunConfig,
    run_id: str,
    outcomes: list[SiteOutcome],
    pooled: PooledSet | None,
    info: DatasetInfo,
    evaluations: Mapping[str, EvalReport] | None,
    stage_seconds: Mapping[str, float],
    status: RunStatus,
    error: str = "",
    correction: str = "none",
    tuning: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Everything a reader of the run needs, with the time it was written and the software that wrote it.

    ``evaluations["global"]`` is the global model's evaluation; ``evaluations["uncorrected"]``, when
    present, the same model without the class-imbalance ``correction``; ``tuning``, how that correction
    was tuned on the sites' training images (``coordinator.scoring.tune_at_sites``).
    """
    summary = RunSummary.begun(config, run_id, status, error)
    summary.sites_accepted = sum(o.status == OutcomeStatus.ACCEPTED for o in outcomes)
    summary.sites_by_status = {s: n for s in OutcomeStatus if (n := sum(o.status == s for o in outcomes))}
    summary.sites = [SiteEntry.of(o) for o in sorted(outcomes, key=lambda o: (o.site_id or "~", o.node_id or -1))]
    summary.stage_seconds = {k: round(v, 3) for k, v in stage_seconds.items()}
    if pooled is not None:
        summary.pooled = PooledSummary(images=len(pooled.labels), images_per_site=pooled.images_per_site,
                                       class_counts=dict(zip(info.label_names.values(),
                                                             pooled.class_counts(info.num_classes), strict=True)))
    if evaluations is not None:
        evaluation = evaluations["global"]
        summary.global_model = GlobalEvaluation(
            **asdict(evaluation.pooled), confusion=evaluation.confusion, class_names=list(info.label_names.values()),
            correction=correction, tuning=None if tuning is None else Tuning.model_validate(dict(tuning)))
        if "uncorrected" in evaluations:
            summary.uncorrected = PooledMetrics.of(evaluations["uncorrected"].pooled)
        prior = pooled.prior_shares() if pooled is not None else {}
        summary.per_site = [
            SiteScore(site_id=e.site_id, node_id=e.node_id, problem=e.problem, epsilon=e.epsilon,
                      test_share=evaluation.shares.get(e.site_id), prior_share=prior.get(e.site_id),
                      **(asdict(m) if m else {}))
            for e, m in evaluation.sites
        ]
    return summary


def dump_summary(summary: RunSummary) -> dict[str, Any]:
    """The summary as the plain JSON values summary.json holds (for ``--json`` output and scripts)."""
    return json.loads(summary.model_dump_json())
