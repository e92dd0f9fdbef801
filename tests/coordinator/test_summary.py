"""summary.json is a versioned RunSummary: built by the run, read back whole, refused in words when too old."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.evaluate import SiteEvaluation, aggregate
from coordinator.pool import PooledSet
from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.summary import SCHEMA_VERSION, RunStatus, RunSummary, SummaryError, build_summary, read_summary
from shared.config import RunConfig
from shared.datasets import dataset_info
from shared.metrics import EvalCounts


def _built() -> RunSummary:
    """Two sites pooled and scored; one class of one site's test share is empty (its AUC is undefined)."""
    info = dataset_info("breastmnist")
    outcomes = [SiteOutcome(1, "site-a", OutcomeStatus.ACCEPTED, bundle_bytes=9000, metrics={"distill-seconds": 1.5},
                            class_counts={0: 2, 1: 2}, real_class_counts={0: 40, 1: 110}),
                SiteOutcome(2, "site-b", OutcomeStatus.REJECTED, reason="bad")]
    pooled = PooledSet(torch.zeros(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]), {"site-a": 4})
    one_class = EvalCounts.from_scores(np.zeros(10, dtype=np.int64), np.tile([0.7, 0.3], (10, 1)))
    report = aggregate([SiteEvaluation("site-a", 1, one_class)], info.num_classes)
    tuning = {"scale": 1.0, "sites": 0, "training_images": 0, "rejected": {"site-b": "rejected: too many"}}
    return build_summary(RunConfig(sites=2), "run-1", outcomes, pooled, info, {"global": report, "uncorrected": report},
                         {"train": 1.23456}, RunStatus.COMPLETED, correction="tuned-logit-adjust", tuning=tuning)


def test_a_built_summary_survives_its_file_with_every_part_typed() -> None:
    """What the run builds is what a reader gets back; an undefined figure is None, never NaN."""
    summary = _built()
    back = RunSummary.model_validate_json(summary.to_json())
    assert back == summary and back.schema_version == SCHEMA_VERSION
    assert back.global_model is not None and back.global_model.auc is None  # one class: no AUC
    assert back.global_model.tuning is not None and back.global_model.tuning.rejected == {"site-b": "rejected: too many"}
    assert back.sites_by_status == {OutcomeStatus.ACCEPTED: 1, OutcomeStatus.REJECTED: 1}
    assert back.sites[0].class_counts == {0: 2, 1: 2} and back.stage_seconds == {"train": 1.235}
    assert back.pooled is not None and back.pooled.class_counts == {"malignant": 2, "normal, benign": 2}
    raw = json.loads(summary.to_json())
    assert "global" in raw and "global_model" not in raw and raw["global"]["auc"] is None


def test_a_figure_added_later_to_the_tuning_travels_into_the_file() -> None:
    """Parts converted from other modules' results keep a field this schema does not know yet."""
    raw = json.loads(_built().to_json())
    raw["global"]["tuning"]["chosen_by"] = "accuracy"
    assert RunSummary.model_validate(raw).global_model.tuning.model_extra == {"chosen_by": "accuracy"}


@pytest.mark.parametrize(("version", "said"), [(None, "has no schema_version"), (2, "has schema_version 2")])
def test_a_summary_of_another_version_is_refused_naming_the_file_and_the_version_read(
    tmp_path: Path, version: int | None, said: str
) -> None:
    """An older (unversioned) or newer file is not half-read: the error names it and the version expected."""
    raw = json.loads(_built().to_json())
    raw.pop("schema_version") if version is None else raw.update(schema_version=version)
    (tmp_path / "summary.json").write_text(json.dumps(raw))
    with pytest.raises(SummaryError) as caught:
        read_summary(tmp_path)
    assert str(tmp_path / "summary.json") in str(caught.value) and said in str(caught.value)
    assert f"this feddistill reads schema_version {SCHEMA_VERSION}" in str(caught.value)


def test_a_missing_or_malformed_summary_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SummaryError, match="summary.json: cannot be read"):
        read_summary(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(SummaryError, match="summary.json: .*JSON"):
        read_summary(tmp_path)
