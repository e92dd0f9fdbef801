"""Typed values that cross a trust boundary: requests, manifests, and the names of record keys.

Everything a site or the coordinator receives from the other side is parsed into one of these
pydantic models before any code looks at it (``model_validate_json``); unknown fields are refused.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigError
from shared.metrics import SCORE_BINS, TUNING_SCALES, EvalCounts
from shared.untrusted import untrusted_text

SCHEMA_VERSION = 1

# A site id names files and appears in logs and reports: letters, digits, '.', '_' and '-' only.
SITE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN)]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # nonces, SHA-256 digests, key fingerprints
# What the coordinator names reaches a site's terminal, log and audit log, so it is one plain word: a letter
# or digit, then letters, digits, '.', '_' and '-'. A run id is the coordinator's run folder's name
# (``run-7``, ``breastmnist-dm-ipc10-20260101-120000``); a dataset is a MedMNIST flag (``breastmnist``).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
RunId = Annotated[str, Field(pattern=RUN_ID_PATTERN)]
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DatasetName = Annotated[str, Field(pattern=DATASET_PATTERN)]


def is_site_id(text: str) -> bool:
    return re.fullmatch(SITE_ID_PATTERN, text) is not None


def is_run_id(text: str) -> bool:
    """Whether ``text`` may name a run: a coordinator checks its run folder's name with it before asking any site."""
    return re.fullmatch(RUN_ID_PATTERN, text) is not None


class DistillMethod(StrEnum):
    """Dataset distillation methods a site can run."""

    DC = "dc"
    DM = "dm"
    MTT = "mtt"
    IDM = "idm"
    DPDM = "dpdm"  # differentially private distribution matching: a formal (epsilon, delta) guarantee


class InitMode(StrEnum):
    """How synthetic images start. ``REAL`` copies patient images into the release: opt-in only."""

    NOISE = "noise"
    REAL = "real"


class EmbeddingMatch(StrEnum):
    """What DM and IDM match between real and synthetic embeddings of a class."""

    MEAN = "mean"  # the mean embedding (DM's and IDM's loss)
    MMD = "mmd"  # the whole distribution: squared MMD under a Gaussian kernel (M3D, Zhang et al., AAAI 2024)


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


def first_problem(exc: ValidationError) -> str:
    """One line naming the first invalid field, without echoing its (untrusted) value."""
    error = exc.errors()[0]
    location = untrusted_text(".".join(str(part) for part in error["loc"]) or "(root)", 100)  # a key can be the sender's
    return f"field {location!r}: {untrusted_text(error['msg'], 200)}"  # some messages quote the value's start


def setting_error(exc: ValidationError, template: str) -> ConfigError:
    """A ConfigError naming the first bad setting in kebab-case: ``template`` holds ``{key}`` and ``{msg}``.

    E.g. ``"option --{key}: {msg}"`` for command-line options, ``"run config {key!r}: {msg}"`` for Flower's.
    """
    error = exc.errors()[0]
    key = str(error["loc"][0]).replace("_", "-") if error["loc"] else "(root)"
    return ConfigError(template.format(key=key, msg=error["msg"]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Strict):
    """The ConvNet used for matching and for the global model (Zhao et al. 2021 defaults)."""

    depth: int = Field(3, ge=1, le=6)
    width: int = Field(128, ge=8, le=1024)


class DCConfig(_Strict):
    """Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

    ``outer_loop``/``inner_loop`` left at 0 take the paper's values for the given IPC.
    """

    method: Literal[DistillMethod.DC] = DistillMethod.DC
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(100, ge=1, le=100_000)
    lr_img: float = Field(0.1, gt=0, le=100)
    lr_net: float = Field(0.01, gt=0, le=10)
    batch_real: int = Field(256, ge=1, le=100_000)
    outer_loop: int = Field(0, ge=0, le=1000)
    inner_loop: int = Field(0, ge=0, le=1000)
    dsa: bool = True
    init: InitMode = InitMode.NOISE
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class DMConfig(_Strict):
    """Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

    Defaults are the paper's except ``iterations`` and ``init``, lowered / changed for a CPU site.
    """


    method: Literal[DistillMethod.DM] = DistillMethod.DM
    ipc: int = Field(10, ge=1, le=1000)
    # The paper runs 20,000; DM converges slowly, so fewer iterations mean a blurrier set.
    iterations: int = Field(1000, ge=1, le=100_000)
    lr_img: float = Field(1.0, gt=0, le=100)  # paper: 1.0 (SGD, momentum 0.5)
    batch_real: int = Field(256, ge=1, le=100_000)  # paper: 256 real images per class per iteration
    dsa: bool = True
    # The paper starts from real images; noise keeps patients' images out of the release but needs
    # more iterations to reach the same quality.
    init: InitMode = InitMode.NOISE
    match: EmbeddingMatch = EmbeddingMatch.MEAN  # mmd measured below mean on RetinaMNIST (docs/benchmarks.md)
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class MTTConfig(_Strict):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022), scaled down for a CPU site.

    Paper values quoted are its CIFAR-10 settings at 10 images per class.
    """


    method: Literal[DistillMethod.MTT] = DistillMethod.MTT
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(500, ge=1, le=100_000)  # paper: 5000; fewer = less refined images
    # Paper: 1e3 and 1e-5 (ZCA-whitened CIFAR, real init). On MedMNIST from noise those diverged in
    # most iterations (the learnable lr turned negative); 10 and 1e-7 were stable (docs/benchmarks.md).
    lr_img: float = Field(10.0, gt=0, le=1e6)
    lr_lr: float = Field(1e-7, gt=0, le=1.0)
    lr_teacher: float = Field(0.01, gt=0, le=10)  # paper: 0.01; experts' lr and the student's initial lr
    num_experts: int = Field(5, ge=1, le=1000)  # paper: 100; fewer = less diverse targets, may overfit one run
    train_epochs_expert: int = Field(15, ge=2, le=1000)  # paper: 50; limits how late a start can be
    max_start_epoch: int = Field(10, ge=1, le=1000)  # paper: 20 (2 at 1 IPC); start epoch drawn in [0, this)
    expert_epochs: int = Field(2, ge=1, le=100)  # paper: 2; target = start + this
    # Paper: 30; each unrolled step keeps its activations for the backward pass (memory and time).
    syn_steps: int = Field(20, ge=1, le=1000)
    batch_syn: int = Field(0, ge=0, le=100_000)  # 0 = the whole synthetic set per step, as the paper
    zca: bool = False  # paper: True on CIFAR; see the module docstring for how it is released
    dsa: bool = True
    init: InitMode = InitMode.NOISE  # paper: real images; noise keeps patients' images out of the release
    seed: int = Field(0, ge=0)  # also seeds the experts, so changing it retrains them
    network: NetworkSpec = NetworkSpec()

    @model_validator(mode="after")
    def _targets_exist(self) -> MTTConfig:
        if self.max_start_epoch - 1 + self.expert_epochs > self.train_epochs_expert:
            raise ValueError(
                f"max_start_epoch - 1 + expert_epochs ({self.max_start_epoch - 1 + self.expert_epochs}) "
                f"exceeds train_epochs_expert ({self.train_epochs_expert})"
            )
        return self


class IDMConfig(_Strict):
    """Improved Distribution Matching (Zhao, Li, Qin & Yu, CVPR 2023), scaled down for a CPU site.

    DM's mean-embedding matching, but the embeddings come from a queue of partly trained networks (a
    fresh one joins every ``new_model_every`` iterations, the oldest leaves; each iteration trains
    some of them a few steps on real data), plus a class-aware term: the cross-entropy of the
    synthetic images under the sampled network, weighted by that network's training accuracy. The
    paper's partition-and-expansion augmentation is left out: it changes what an image of the
    release means. Paper values quoted are its CIFAR-10 settings.
    """

    method: Literal[DistillMethod.IDM] = DistillMethod.IDM
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(1000, ge=1, le=100_000)  # paper: 20,000
    lr_img: float = Field(1.0, gt=0, le=100)  # paper: 0.2 from real images; 1.0 (DM's) from noise
    batch_real: int = Field(256, ge=1, le=100_000)  # real images per class per matching step
    queue_size: int = Field(10, ge=1, le=1000)  # paper: 100
    new_model_every: int = Field(10, ge=1, le=100_000)  # paper: 30 (5 at ipc 1)
    models_trained: int = Field(1, ge=1, le=1000)  # networks trained per iteration; paper: 2
    train_steps: int = Field(1, ge=1, le=1000)  # SGD steps each of them takes; paper: 10 (the CPU cost)
    train_batch: int = Field(64, ge=1, le=100_000)  # real images per step; paper: 256
    lr_net: float = Field(0.01, gt=0, le=10)  # paper: 0.01, momentum 0.9, weight decay 5e-4
    ce_weight: float = Field(0.5, ge=0, le=100)  # paper: 0.5 at ipc 1 and 10 on CIFAR-10
    dsa: bool = True
    init: InitMode = InitMode.NOISE  # paper: real images; noise keeps patients' images out of the release
    match: EmbeddingMatch = EmbeddingMatch.MEAN  # mmd measured below mean on RetinaMNIST (docs/benchmarks.md)
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class DPDMConfig(_Strict):
    """Differentially private distribution matching (DP-MERF style; Harder et al., AISTATS 2021).

    The real images are touched once, to release per class one noisy sum of clipped random features
    and a noisy count (one Gaussian mechanism, ``site_agent/distill/dpdm.py``); the synthetic images
    are then fitted to those noisy means, which is post-processing. The release is
    (``epsilon``, ``delta``)-differentially private under adding or removing one training image.
    Starting from real images would put them into the release outside the budget, so ``init`` is
    noise only; refinement rounds would touch the data again and are refused too.
    """

    method: Literal[DistillMethod.DPDM] = DistillMethod.DPDM
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(300, ge=1, le=100_000)
    # DM's 1.0 barely moved the loss (unit-norm features give small gradients): on BreastMNIST 40 iterations
    # took it from 0.27 to 0.23 at lr 1 and to 0.09 at lr 10.
    lr_img: float = Field(10.0, gt=0, le=100)
    epsilon: float = Field(4.0, gt=0, le=20)  # above ~20 a guarantee says little
    delta: float = Field(1e-5, gt=0, le=1e-3)
    dsa: bool = True  # features averaged over 4 fixed DSA views of each image (False: the image alone)
    init: InitMode = InitMode.NOISE
    seed: int = Field(0, ge=0)  # the random networks, projections and views; never the noise
    network: NetworkSpec = NetworkSpec()

    @model_validator(mode="after")
    def _noise_init_only(self) -> DPDMConfig:
        if self.init != InitMode.NOISE:
            raise ValueError("dpdm starts from noise only: init 'real' would release patient images outside the "
                             "privacy budget")
        return self


DistillConfig = Annotated[DCConfig | DMConfig | MTTConfig | IDMConfig | DPDMConfig, Field(discriminator="method")]


class ModelSpec(_Strict):
    """Enough to rebuild the global model at a site for evaluation."""

    in_channels: int = Field(ge=1, le=16)
    num_classes: int = Field(ge=2, le=1000)
    image_size: int = Field(ge=8, le=512)
    network: NetworkSpec = NetworkSpec()


class DistillRequest(_Strict):
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

    @model_validator(mode="after")
    def _model_from_round_two(self) -> DistillRequest:
        if (self.round > 1) != (self.global_model is not None):
            raise ValueError("a global model comes with every request from round 2 on, and only then")
        if self.round > 1 and self.distill.method == DistillMethod.DPDM:
            raise ValueError("dpdm releases once: a refinement round would touch the site's images again "
                             "outside the privacy budget")
        return self


class EvaluateRequest(_Strict):
    """Sent with the global model's weights: evaluate it on the site's local test split."""

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: RunId
    dataset: DatasetName
    model: ModelSpec


# The shift is log(real prior) - log(pooled prior) of add-one-smoothed priors: under 21 in size for up to 10^9 images.
SHIFT_LIMIT = 25.0
_Shift = Annotated[float, Field(ge=-SHIFT_LIMIT, le=SHIFT_LIMIT, allow_inf_nan=False)]


class TuneRequest(_Strict):
    """Sent with the uncorrected global model's weights: count, on the site's training images, the right
    predictions of the model with ``scale * shift`` added to its logits, for each scale of the published grid
    (``shared.metrics.TUNING_SCALES``, ``hits_by_scale``). The coordinator chooses no scale.

    The shift is taken as sent, within what a log ratio of two priors can be: the site cannot check the
    federation's prior, and a shift makes no threshold that the model's own weights could not make. What
    protects the training images is the noise on the answer (``site_agent.evaluate``).
    ``committed_counts`` are the training images per class this site signed in its manifest: the site
    reports no more (its noisy counts are clipped there, post-processing), so the coordinator can hold it to them.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: RunId
    dataset: DatasetName
    model: ModelSpec
    shift: list[_Shift] = Field(min_length=2, max_length=1000)
    committed_counts: list[Annotated[int, Field(ge=0, le=10**9)]] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one_value_per_class(self) -> TuneRequest:
        k = self.model.num_classes
        if len(self.shift) != k or (self.committed_counts is not None and len(self.committed_counts) != k):
            raise ValueError(f"shift and committed_counts need one value per class ({k})")
        return self


_Count = Annotated[int, Field(ge=0, le=10**9)]
_Seconds = Annotated[float, Field(ge=0, le=10**7, allow_inf_nan=False)]
_Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class DistillReplyMetrics(_Strict):
    """The numbers a site sends beside its sealed bundle: unsigned, informational, and bounded."""

    num_examples: float = Field(alias=MetricKey.NUM_EXAMPLES.value, ge=0, le=10**9, allow_inf_nan=False)
    distill_seconds: _Seconds = Field(alias=MetricKey.DISTILL_SECONDS.value)
    seal_seconds: _Seconds = Field(alias=MetricKey.SEAL_SECONDS.value)
    privacy_seconds: _Seconds = Field(0.0, alias=MetricKey.PRIVACY_SECONDS.value)
    bundle_bytes: float = Field(alias=MetricKey.BUNDLE_BYTES.value, ge=0, le=2**40, allow_inf_nan=False)
    synthetic_images: float = Field(alias=MetricKey.SYNTHETIC_IMAGES.value, ge=0, le=10**7, allow_inf_nan=False)


_Epsilon = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class EvaluateReply(_Strict):
    """A site's evaluation of the global model: counts that the coordinator sums (``shared.metrics``).

    Parsed with :meth:`counts`, which checks every count against the others, so a site cannot
    weigh in with more images than it counted or with histograms that do not add up. A deployed site's
    counts are noisy and then made consistent (``site_agent.evaluate``); ``epsilon`` says how noisy.
    """

    num_examples: _Count = Field(alias=MetricKey.NUM_EXAMPLES.value)
    class_counts: list[_Count] = Field(alias=MetricKey.CLASS_COUNTS.value, max_length=1000)
    confusion: list[_Count] = Field(alias=MetricKey.CONFUSION.value, max_length=1000**2)
    score_histograms: list[_Count] = Field(alias=MetricKey.SCORE_HISTOGRAMS.value, max_length=2 * 1000 * SCORE_BINS)
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


class TuneReply(_Strict):
    """A site's counts for tuning the imbalance correction: its training images per class, and the right
    predictions for each scale of ``shared.metrics.TUNING_SCALES`` (noisy at a deployed site, like an evaluation)."""

    num_examples: _Count = Field(alias=MetricKey.NUM_EXAMPLES.value)
    class_counts: list[_Count] = Field(alias=MetricKey.CLASS_COUNTS.value, max_length=1000)
    hits: list[_Count] = Field(alias=MetricKey.HITS.value, max_length=len(TUNING_SCALES))
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


class Estimate(_Strict):
    """A measured fraction and its bootstrap 95 % interval."""

    value: _Fraction
    low: _Fraction
    high: _Fraction


class AttackSummary(_Strict):
    """How well one membership-inference attack told the site's members from its non-members."""

    auc: Estimate
    tpr_at_1pct_fpr: Estimate
    tpr_at_0_1pct_fpr: Estimate  # with N non-members, FPRs below 1/N read as zero false positives


class PrivacySummary(_Strict):
    """The numbers of a site's privacy report (``site_agent.privacy``), signed into the manifest.

    The full report, with per-image nearest neighbours, stays at the site.
    """

    # None: not measurable (no held-out images at the site), or for LiRA no time for the shadow models.
    threshold_attack: AttackSummary | None = None
    lira: AttackSummary | None = None
    reference_threshold_attack: AttackSummary | None = None  # a random real subset of the same size, trained alike
    reference_lira: AttackSummary | None = None
    members: _Count
    non_members: _Count
    shadow_models: _Count
    nearest_real_flagged: _Count  # synthetic images closer to a real one than the policy's quantile allows
    nearest_real_min_rank: _Fraction  # lowest rank among real-to-real nearest distances (0: a copy)
    max_ssim: float = Field(ge=-1, le=1, allow_inf_nan=False)
    synthetic_duplicates: _Count
    site_accuracy: _Fraction | None = None  # of a model trained on the set, on the site's held-out images
    site_balanced_accuracy: _Fraction | None = None
    site_auc: _Fraction | None = None  # None where the held-out images lack a class
    site_test_images: _Count
    seconds: _Seconds

    def strongest(self, figure: Literal["auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"]) -> float | None:
        """The strongest attack's value of ``figure`` (threshold or LiRA); None when none could be measured."""
        attacks = [a for a in (self.threshold_attack, self.lira) if a is not None]
        return max((getattr(a, figure).value for a in attacks), default=None)


class PayloadInfo(_Strict):
    """Layout of the payload that follows the manifest (see ``shared.bundle``)."""

    format: Literal["f16-u16-le-v1"] = "f16-u16-le-v1"
    count: int = Field(ge=1)
    sha256: Hex64
    nbytes: int = Field(ge=1)


class DPGuarantee(_Strict):
    """The differential-privacy guarantee of a release (``dpdm``), signed into the manifest.

    The synthetic set and the released class counts are (epsilon, delta)-DP under adding or removing
    one of the site's training images, for this one release; the site's privacy report is not covered.
    """

    epsilon: float = Field(gt=0, le=100, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1, allow_inf_nan=False)
    mechanism: Literal["gaussian"] = "gaussian"
    # A name the report prints: one of the accountants we know, never free text from the site.
    accountant: Literal["dp-accounting PLD", "dp-accounting RDP"]
    noise_multiplier: float = Field(gt=0, le=10**6, allow_inf_nan=False)  # noise std / sensitivity
    sensitivity: float = Field(gt=0, le=10**6, allow_inf_nan=False)  # L2, add/remove one image


class ResizeMethod(StrEnum):
    """The filter a site resizes its images with (``site_agent/images.py``)."""

    LANCZOS = "lanczos"


_Side = Annotated[int, Field(ge=1, le=100_000)]


class Preprocessing(_Strict):
    """How a site brought its images to the federation's size before distilling them, signed into the manifest.

    Non-square images were centre-cropped to a square, then every image was resized to ``resized_to``
    with ``method``. Sizes are (height, width): each side's smallest and largest over the site's images.
    """

    smallest_source: tuple[_Side, _Side]
    largest_source: tuple[_Side, _Side]
    cropped: bool  # some images were not square and lost the edges of their longer side
    resized_to: int = Field(ge=8, le=512)
    method: ResizeMethod = ResizeMethod.LANCZOS

    def source_size(self) -> str:
        """The source size as width x height (``128x128``), or the range of sizes (``360x360 to 369x366``)."""
        (h0, w0), (h1, w1) = self.smallest_source, self.largest_source
        return f"{w0}x{h0}" if (h0, w0) == (h1, w1) else f"{w0}x{h0} to {w1}x{h1}"


class BundleManifest(_Strict):
    """Self-description of one released synthetic set; signed by the site."""

    schema_version: Literal[1] = SCHEMA_VERSION
    site_id: SiteId
    run_id: RunId
    nonce: Hex64
    recipient_fingerprint: Hex64
    dataset: DatasetName
    task: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int = Field(ge=2)
    label_set: list[int]
    class_counts: dict[int, int]
    num_real_examples: int = Field(ge=0)
    distill: DistillConfig
    # Iterations actually run (MTT: accepted ones); fewer than asked when the site's time limit hit.
    iterations_completed: int | None = Field(None, ge=0)
    # The site's real training images per class, as its policy releases them (rounded to a multiple of
    # ``real_class_counts_rounding``), for the coordinator's class-imbalance correction; None: withheld.
    real_class_counts: dict[int, _Count] | None = None
    real_class_counts_rounding: int = Field(1, ge=1, le=10**6)
    # Its test images per class, rounded alike (None: withheld). With real_class_counts, what the site commits to
    # before it sees any model: the coordinator pools no more of its evaluation or tuning counts than this.
    real_test_class_counts: dict[int, _Count] | None = None
    round: int = Field(1, ge=1, le=100)  # the refinement round this set answers
    privacy: PrivacySummary | None = None  # the site's privacy report in numbers; None: not computed
    # A differentially private release (dpdm): its guarantee, which then also covers real_class_counts
    # and num_real_examples (noisy); None: no formal guarantee.
    dp: DPGuarantee | None = None
    # How the site resized its images to image_shape before distilling; None: they were stored at that size.
    preprocessing: Preprocessing | None = None
    normalization: Literal["x/127.5-1"] = "x/127.5-1"
    software: dict[str, str]
    created_at: str
    payload: PayloadInfo
