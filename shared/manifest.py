"""The manifest a site signs into every release: what the set is, what it was made from, and its privacy figures."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from shared.fields import SCHEMA_VERSION, Count, DatasetName, Fraction, Hex64, RunId, Seconds, SiteId, StrictModel
from shared.methods import DistillConfig, SoftLabelSpec


class Estimate(StrictModel):
    """A measured fraction and its bootstrap 95 % interval."""

    value: Fraction
    low: Fraction
    high: Fraction


class AttackSummary(StrictModel):
    """How well one membership-inference attack told the site's members from its non-members."""

    auc: Estimate
    tpr_at_1pct_fpr: Estimate
    tpr_at_0_1pct_fpr: Estimate  # with N non-members, FPRs below 1/N read as zero false positives


class PrivacySummary(StrictModel):
    """The numbers of a site's privacy report (``site_agent.privacy``), signed into the manifest.

    The full report, with per-image nearest neighbours, stays at the site.
    """

    # None: not measurable (no held-out images at the site), or for LiRA no time for the shadow models.
    threshold_attack: AttackSummary | None = None
    lira: AttackSummary | None = None
    reference_threshold_attack: AttackSummary | None = None  # a random real subset of the same size, trained alike
    reference_lira: AttackSummary | None = None
    members: Count
    non_members: Count
    shadow_models: Count
    nearest_real_flagged: Count  # synthetic images closer to a real one than the policy's quantile allows
    nearest_real_min_rank: Fraction  # lowest rank among real-to-real nearest distances (0: a copy)
    max_ssim: float = Field(ge=-1, le=1, allow_inf_nan=False)
    synthetic_duplicates: Count
    site_accuracy: Fraction | None = None  # of a model trained on the set, on the site's held-out images
    site_balanced_accuracy: Fraction | None = None
    site_auc: Fraction | None = None  # None where the held-out images lack a class
    site_test_images: Count
    seconds: Seconds

    def strongest(self, figure: Literal["auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"]) -> float | None:
        """The strongest attack's value of ``figure`` (threshold or LiRA); None when none could be measured."""
        attacks = [a for a in (self.threshold_attack, self.lira) if a is not None]
        return max((getattr(a, figure).value for a in attacks), default=None)


class PayloadInfo(StrictModel):
    """Layout of the payload that follows the manifest (see ``shared.bundle``)."""

    format: Literal["f16-u16-le-v1"] = "f16-u16-le-v1"
    count: int = Field(ge=1)
    sha256: Hex64
    nbytes: int = Field(ge=1)


class DPGuarantee(StrictModel):
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


class Preprocessing(StrictModel):
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


class BundleManifest(StrictModel):
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
    # How the payload's soft labels were made (it then holds K class probabilities per image); None: classes only.
    soft_labels: SoftLabelSpec | None = None
    # Iterations actually run (MTT: accepted ones); fewer than asked when the site's time limit hit.
    iterations_completed: int | None = Field(None, ge=0)
    # The site's real training images per class, as its policy releases them (rounded to a multiple of
    # ``real_class_counts_rounding``), for the coordinator's class-imbalance correction; None: withheld.
    real_class_counts: dict[int, Count] | None = None
    real_class_counts_rounding: int = Field(1, ge=1, le=10**6)
    # Its test images per class, rounded alike (None: withheld). With real_class_counts, what the site commits to
    # before it sees any model: the coordinator pools no more of its evaluation or tuning counts than this.
    real_test_class_counts: dict[int, Count] | None = None
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
