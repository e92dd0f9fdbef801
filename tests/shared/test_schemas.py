"""What the coordinator names in a request (its run id, its dataset) is one plain word, or refused at the door."""

from __future__ import annotations

import json

import pytest

from shared.fields import is_run_id
from shared.schemas import DistillRequest, EvaluateRequest, ModelSpec, TuneRequest
from tests.conftest import make_request

FORGED = "run-1\n approved by Dr A. Jones \x1b[2K\x1b[1A"


@pytest.mark.parametrize("run_id", [
    "run-7",  # coordinator run: <out-dir>/run-<Flower run id>
    "breastmnist-dm-ipc10-20260101-120000",  # coordinator simulate's run folder
    "pooled-idm-ipc10-seed0",  # a study arm's folder
    "site-local-preview-20260101T120000Z",  # site-agent distill's own request
    "test_resume_keeps_the_run0",  # a pytest tmp_path
    "r",
    "a" * 128,
])
def test_every_run_id_a_coordinator_makes_passes(run_id: str) -> None:
    """The run folder names the coordinator, its studies and the site's preview choose are all valid run ids."""
    assert make_request(run_id=run_id).run_id == run_id and is_run_id(run_id)


@pytest.mark.parametrize("run_id", [
    FORGED, "run-1\n", "run 1", "../etc", "-rf", ".hidden", "run\u202e1", "r\u00e9", "run:1", "", "a" * 129,
])
@pytest.mark.parametrize("model", [DistillRequest, EvaluateRequest, TuneRequest])
def test_a_run_id_that_is_not_one_plain_word_is_refused(model: type, run_id: str) -> None:
    """Newlines, escape codes, spaces, separators and non-ASCII letters never reach a site's terminal or log."""
    fields = {"distill": {"method": "dc"}, "nonce": "ab" * 32} if model is DistillRequest else {
        "model": ModelSpec(in_channels=1, num_classes=2, image_size=28).model_dump()}
    if model is TuneRequest:
        fields |= {"shift": [0.0, 0.0], "scales": [1.0]}
    with pytest.raises(ValueError, match="run_id"):
        model.model_validate_json(json.dumps({"run_id": run_id, "dataset": "breastmnist", **fields}))
    assert not is_run_id(run_id)


@pytest.mark.parametrize("dataset", ["breast mnist", "breastmnist\n", "\x1b[2Kbreastmnist", ""])
def test_a_dataset_that_is_not_one_plain_word_is_refused(dataset: str) -> None:
    """The dataset name is the coordinator's too, and printed beside the run id."""
    with pytest.raises(ValueError, match="dataset"):
        DistillRequest.model_validate_json(make_request().model_copy(update={"dataset": dataset}).model_dump_json())

