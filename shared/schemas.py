"""The requests a coordinator sends a site and the counts a site answers with, as typed values.

Everything a site or the coordinator receives from the other side is parsed into one of these
pydantic models before any code looks at it (``model_validate_json``); unknown fields are refused.
Their building blocks are in ``shared.fields``, a request's method settings in ``shared.methods``, the
signed manifest of a release in ``shared.manifest``, and the Flower records that carry them in
``shared.wire``.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from shared.fields import SCHEMA_VERSION, Count, DatasetName, Hex64, RunId, Seconds, StrictModel
from shared.methods import DistillConfig, DistillMethod, NetworkSpec, SoftLabelSpec
from shared.metrics import SCORE_BINS, TUNING_SCALES, EvalCounts
from shared.training import TrainSettings


class ImbalanceCorrection(StrEnum):
    """How the global model, trained on balanced synthetic sets, is corrected for the real class mix."""

    NONE = "none"
    LOGIT_ADJUST = "logit-adjust"  # add log(real prior / pooled prior) to the logits (Menon et al., ICLR 2021)
    # the same shift times a scale tau chosen on the sites' own training images (summed confusion counts)
    TUNED_LOGIT_ADJUST = "tuned-logit-adjust"
    REWEIGHT = "reweight"  # weight each class's loss by real prior / pooled prior while training


class PartitionScheme(StrEnum):
    """How a simulation splits one dataset across simulated sites."""

    IID = "iid"
    DIRICHLET = "dirichlet"


class MetricKey(StrEnum):
    """Names of the numbers a site reports back."""

    NUM_EXAMPLES = "num-examples"
    DISTILL_SECONDS = "distill-seconds"
    SEAL_SECONDS = "seal-seconds"
    PRIVACY_SECONDS = "privacy-seconds"  # the site's privacy report before release
    BUNDLE_BYTES = "bundle-bytes"
    SYNTHETIC_IMAGES = "synthetic-images"
    # Evaluation of the global model at a site: summable counts only (shared.metrics.EvalCounts).
    CLASS_COUNTS = "class-counts"  # (K,) test images per class
    CONFUSION = "confusion"  # (K*K,) row-major, rows = true class
    SCORE_HISTOGRAMS = "score-histograms"  # (K*2*SCORE_BINS,) row-major
    # Tuning the imbalance correction at a site: (S,) right predictions on its training images, one per scale.
    HITS = "hits"
    EPSILON = "epsilon"  # the privacy loss of one evaluate or tune answer (its noise); absent: exact counts


class ModelSpec(StrictModel):
    """Enough to rebuild the global model at a site for evaluation."""

    in_channels: int = Field(ge=1, le=16)
    num_classes: int = Field(ge=2, le=1000)
    image_size: int = Field(ge=8, le=512)
    network: NetworkSpec = NetworkSpec()


class DistillRequest(StrictModel):
    """What the coordinator asks of one site. The nonce is fresh per site, per round and per run.

    From round 2 on (refinement rounds, FedDM-style) the message also carries the current global
    model's weights (described by ``global_model``): the site refines its own previous synthetic set
    against that model as well as fresh random networks.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: RunId
    nonce: Hex64
    dataset: DatasetName
    distill: DistillConfig
    round: int = Field(1, ge=1, le=100)
    global_model: ModelSpec | None = None
    soft_labels: SoftLabelSpec | None = None  # None: release each image's class only

    @model_validator(mode="after")
    def _model_from_round_two(self) -> DistillRequest:
        if (self.round > 1) != (self.global_model is not None):
            raise ValueError("a global model comes with every request from round 2 on, and only then")
        if self.round > 1 and self.distill.method == DistillMethod.DPDM:
            raise ValueError("dpdm releases once: a refinement round would touch the site's images again "
                             "outside the privacy budget")
        if self.soft_labels is not None and self.distill.method == DistillMethod.DPDM:
            raise ValueError("dpdm releases no soft labels: its teacher would see the site's images outside the "
                             "privacy budget")
        return self


class TrainingSpec(StrictModel):
    """How the global model is trained on the pooled sets (``shared.pooled_training``): the coordinator trains it
    so, and so does every site that scores it, on the same signed sets (``site_agent.scored_model``)."""

    epochs: int = Field(ge=1, le=10_000)
    lr: float = Field(gt=0, le=10, allow_inf_nan=False)
    batch_size: int = Field(ge=1, le=65_536)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = True
    seed: int = Field(ge=0, lt=2**31)
    balance_classes: bool = False

    @classmethod
    def of(cls, settings: TrainSettings) -> TrainingSpec:
        return cls(**dataclasses.asdict(settings))

    def settings(self) -> TrainSettings:
        return TrainSettings(**self.model_dump())


# The shift is log(real prior) - log(pooled prior) of add-one-smoothed priors: under 21 in size for up to 10^9
# images, times a tuning scale of at most 8.
SHIFT_LIMIT = 25.0 * max(TUNING_SCALES)
_Shift = Annotated[float, Field(ge=-SHIFT_LIMIT, le=SHIFT_LIMIT, allow_inf_nan=False)]
_ClassWeight = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class _ScoresPooledModel(StrictModel):
    """A request to score the global model: the site trains it itself on the sets the message carries
    (``shared.wire.RecordKey.POOL``), as ``training`` says, and scores no weights it is sent. ``shift`` (K,)
    is added to its logits and ``class_weights`` (K,) weight its training loss per class: a class-wide
    correction, which cannot single out an image."""

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: RunId
    dataset: DatasetName
    model: ModelSpec
    training: TrainingSpec
    class_weights: list[_ClassWeight] | None = Field(None, max_length=1000)

    def _check_per_class(self, *values: list | None) -> None:
        k = self.model.num_classes
        if any(v is not None and len(v) != k for v in (self.class_weights, *values)):
            raise ValueError(f"shift, class_weights and committed_counts need one value per class ({k})")


class EvaluateRequest(_ScoresPooledModel):
    """Score the global model, trained here on the pooled sets and corrected as asked, on the site's test split."""

    shift: list[_Shift] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one_value_per_class(self) -> EvaluateRequest:
        self._check_per_class(self.shift)
        return self


class TuneRequest(_ScoresPooledModel):
    """Count, on the site's training images, the right predictions of the global model (trained here on the
    pooled sets) with ``scale * shift`` added to its logits, for each scale of the published grid
    (``shared.metrics.TUNING_SCALES``, ``hits_by_scale``). The coordinator chooses no scale.

    ``committed_counts`` are the training images per class this site signed in its manifest: the site
    reports no more (its noisy counts are clipped there, post-processing), so the coordinator can hold it to them.
    """

    shift: list[_Shift] = Field(min_length=2, max_length=1000)
    committed_counts: list[Annotated[int, Field(ge=0, le=10**9)]] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one_value_per_class(self) -> TuneRequest:
        self._check_per_class(self.shift, self.committed_counts)
        return self


class DistillReplyMetrics(StrictModel):
    """The numbers a site sends beside its sealed bundle: unsigned, informational, and bounded."""

    num_examples: float = Field(alias=MetricKey.NUM_EXAMPLES.value, ge=0, le=10**9, allow_inf_nan=False)
    distill_seconds: Seconds = Field(alias=MetricKey.DISTILL_SECONDS.value)
    seal_seconds: Seconds = Field(alias=MetricKey.SEAL_SECONDS.value)
    privacy_seconds: Seconds = Field(0.0, alias=MetricKey.PRIVACY_SECONDS.value)
    bundle_bytes: float = Field(alias=MetricKey.BUNDLE_BYTES.value, ge=0, le=2**40, allow_inf_nan=False)
    synthetic_images: float = Field(alias=MetricKey.SYNTHETIC_IMAGES.value, ge=0, le=10**7, allow_inf_nan=False)


_Epsilon = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class EvaluateReply(StrictModel):
    """A site's evaluation of the global model: counts that the coordinator sums (``shared.metrics``).

    Parsed with :meth:`counts`, which checks every count against the others, so a site cannot
    weigh in with more images than it counted or with histograms that do not add up. A deployed site's
    counts are noisy and then made consistent (``site_agent.evaluate``); ``epsilon`` says how noisy.
    """

    num_examples: Count = Field(alias=MetricKey.NUM_EXAMPLES.value)
    class_counts: list[Count] = Field(alias=MetricKey.CLASS_COUNTS.value, max_length=1000)
    confusion: list[Count] = Field(alias=MetricKey.CONFUSION.value, max_length=1000**2)
    score_histograms: list[Count] = Field(alias=MetricKey.SCORE_HISTOGRAMS.value, max_length=2 * 1000 * SCORE_BINS)
    epsilon: _Epsilon | None = Field(None, alias=MetricKey.EPSILON.value)

    @classmethod
    def from_counts(cls, counts: EvalCounts, epsilon: float | None = None) -> EvaluateReply:
        return cls.model_validate({
            MetricKey.NUM_EXAMPLES.value: counts.num_examples,
            MetricKey.CLASS_COUNTS.value: counts.class_counts.tolist(),
            MetricKey.CONFUSION.value: counts.confusion.reshape(-1).tolist(),
            MetricKey.SCORE_HISTOGRAMS.value: counts.histograms.reshape(-1).tolist(),
            MetricKey.EPSILON.value: epsilon,
        })

    def to_metrics(self) -> dict[str, int | float | list[int]]:
        return self.model_dump(by_alias=True, exclude_none=True)  # a MetricRecord holds no None

    def counts(self, num_classes: int) -> EvalCounts:
        """The counts, once every one is consistent with the others for ``num_classes`` classes.

        Raises:
            ValueError: naming the first count that does not fit.
        """
        k = num_classes
        if len(self.class_counts) != k or sum(self.class_counts) != self.num_examples:
            raise ValueError(f"class-counts must be {k} counts adding up to num-examples")
        if len(self.confusion) != k * k or len(self.score_histograms) != k * 2 * SCORE_BINS:
            raise ValueError(f"confusion or score-histograms has the wrong length for {k} classes")
        per_class = np.asarray(self.class_counts, np.int64)
        confusion = np.asarray(self.confusion, np.int64).reshape(k, k)
        histograms = np.asarray(self.score_histograms, np.int64).reshape(k, 2, SCORE_BINS)
        if not np.array_equal(confusion.sum(axis=1), per_class):
            raise ValueError("confusion rows do not add up to class-counts")
        expected = np.stack([per_class, self.num_examples - per_class], axis=1)  # (K, 2)
        if not np.array_equal(histograms.sum(axis=2), expected):
            raise ValueError("score-histograms do not add up to class-counts")
        return EvalCounts(per_class, confusion, histograms)


class TuneReply(StrictModel):
    """A site's counts for tuning the imbalance correction: its training images per class, and the right
    predictions for each scale of ``shared.metrics.TUNING_SCALES`` (noisy at a deployed site, like an evaluation)."""

    num_examples: Count = Field(alias=MetricKey.NUM_EXAMPLES.value)
    class_counts: list[Count] = Field(alias=MetricKey.CLASS_COUNTS.value, max_length=1000)
    hits: list[Count] = Field(alias=MetricKey.HITS.value, max_length=len(TUNING_SCALES))
    epsilon: _Epsilon | None = Field(None, alias=MetricKey.EPSILON.value)

    @classmethod
    def from_counts(cls, class_counts: np.ndarray, hits: np.ndarray, epsilon: float | None = None) -> TuneReply:
        return cls.model_validate({MetricKey.NUM_EXAMPLES.value: int(np.sum(class_counts)),
                                   MetricKey.CLASS_COUNTS.value: [int(c) for c in class_counts],
                                   MetricKey.HITS.value: [int(h) for h in hits], MetricKey.EPSILON.value: epsilon})

    def to_metrics(self) -> dict[str, int | float | list[int]]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def checked(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Class counts (K,) and hits (S,), once they fit ``num_classes`` classes, the grid and each other.

        Raises:
            ValueError: naming the first count that does not fit.
        """
        if len(self.class_counts) != num_classes or sum(self.class_counts) != self.num_examples:
            raise ValueError(f"class-counts must be {num_classes} counts adding up to num-examples")
        if len(self.hits) != len(TUNING_SCALES):
            raise ValueError(f"hits must hold one count for each of the {len(TUNING_SCALES)} scales")
        if max(self.hits) > self.num_examples:
            raise ValueError("hits count more images than num-examples")
        return np.asarray(self.class_counts, np.int64), np.asarray(self.hits, np.int64)


