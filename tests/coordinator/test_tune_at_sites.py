"""Tuning the imbalance correction with the sites' counts: bad or missing counts are left out, never trusted."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from coordinator import scoring
from coordinator.imbalance import TUNING_SCALES
from coordinator.pool import Commitment, PooledSet
from coordinator.train import train_corrected
from shared.methods import NetworkSpec
from shared.metrics import hits_by_scale
from shared.schemas import ImbalanceCorrection, ModelSpec, TuneReply, TuneRequest
from shared.training import TrainSettings, predict_logits
from shared.wire import FieldKey, RecordKey

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=8, network=NetworkSpec(depth=1, width=8))
CPU = torch.device("cpu")


class TuningGrid:
    """Each node answers a tune request from a script: counts of its images, a site error, or nothing."""

    def __init__(self, answers: dict[int, object]) -> None:
        self.answers, self.sent = answers, {}

    def push_messages(self, messages: list[Message]) -> list[str]:
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{msg.metadata.dst_node_id}"
            self.sent[msg.metadata.message_id] = msg
        return [msg.metadata.message_id for msg in messages]

    def pull_messages(self, ids: list[str]) -> list[Message]:
        replies = []
        for mid in ids:
            msg = self.sent[mid]
            answer = self.answers[msg.metadata.dst_node_id]
            if answer is None:
                continue  # a silent node is polled until the timeout
            if isinstance(answer, str):
                replies.append(Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=answer), reply_to=msg))
            else:
                replies.append(Message(RecordDict({RecordKey.METRICS: MetricRecord(answer(msg))}), reply_to=msg))
        return replies


def _site_counts(images: torch.Tensor, labels: torch.Tensor):
    """What a site holding these images answers: counts under the shift the request carries, of the model it trains
    on the pool the request carries (the coordinator's own uncorrected model: the same training on the same sets)."""

    def answer(msg: Message) -> dict:
        request = TuneRequest.model_validate_json(msg.content.config_records[RecordKey.REQUEST][FieldKey.REQUEST_JSON])
        assert msg.content.config_records[RecordKey.POOL][FieldKey.SETS] == POOL
        assert RecordKey.ARRAYS not in msg.content.array_records  # no weights travel
        logits = predict_logits(_models().uncorrected, images, CPU).numpy()
        hits = hits_by_scale(logits, labels.numpy(), np.array(request.shift))
        return TuneReply.from_counts(np.bincount(labels.numpy(), minlength=2), hits).to_metrics()

    return answer


@functools.cache
def _models():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 20 + [1] * 20)
    images = (2 * labels.float() - 1).reshape(-1, 1, 1, 1) * 0.3 + torch.randn(40, 1, 8, 8, generator=gen)
    return train_corrected(PooledSet(images, labels, {"s": 40}), SPEC, TRAINING, CPU,
                           ImbalanceCorrection.TUNED_LOGIT_ADJUST, np.array([0.9, 0.1]))


TRAINING = TrainSettings(epochs=30, augment=False)
FEDERATION = SimpleNamespace(state=SimpleNamespace(run_id="r"), info=SimpleNamespace(name="breastmnist", num_classes=2),
                             spec=SPEC, config=SimpleNamespace(evaluate_timeout=0.5, train_settings=lambda: TRAINING))
POOL = [b"forwarded set 1", b"forwarded set 2"]  # opaque here: the sites verify them


@pytest.mark.usefixtures("fast_polling")
def test_only_the_counts_that_add_up_are_summed() -> None:
    """Node 1's counts choose the scale; node 2's inconsistent counts, node 3's refusal and silent node 4 are left
    out, and node 5, whose site committed no training counts, is not asked."""
    models = _models()
    gen = torch.Generator().manual_seed(1)
    site_labels = torch.tensor([0] * 45 + [1] * 5)
    site_images = (2 * site_labels.float() - 1).reshape(-1, 1, 1, 1) * 0.3 + torch.randn(50, 1, 8, 8, generator=gen)
    honest = _site_counts(site_images, site_labels)

    def inflated(msg: Message) -> dict:
        counts = honest(msg)
        return {**counts, "num-examples": counts["num-examples"] + 100}

    grid = TuningGrid({1: honest, 2: inflated, 3: "this site's policy withholds tuning counts", 4: None, 5: honest})
    site_of = {n: f"site-{n}" for n in range(1, 6)}
    commitments = {f"site-{n}": Commitment((45, 5), (9, 1)) for n in range(1, 5)} | {"site-5": Commitment(None, None)}
    tuned, tuning = scoring.tune_at_sites(grid, FEDERATION, models, [1, 2, 3, 4, 5], site_of, commitments, POOL)
    expected = models.tuned_on(site_images.numpy(), site_labels.numpy(), CPU)
    assert tuning["sites"] == 1 and tuning["training_images"] == 50 and tuned.scale == expected.scale
    assert set(tuning["accuracy_by_scale"]) == {f"{s:g}" for s in TUNING_SCALES}
    assert set(tuning["rejected"]) == {"site-2"} and 5 not in {m.metadata.dst_node_id for m in grid.sent.values()}
    request = TuneRequest.model_validate_json(grid.sent["m1"].content.config_records[RecordKey.REQUEST][FieldKey.REQUEST_JSON])
    assert request.committed_counts == [45, 5]  # the site clips its noisy counts there

    nobody = TuningGrid({1: "refused", 2: None})
    kept, tuning = scoring.tune_at_sites(nobody, FEDERATION, models, [1, 2], site_of, commitments, POOL)
    assert kept is models and tuning == {"scale": 1.0, "sites": 0, "training_images": 0, "rejected": {}}


@pytest.mark.usefixtures("fast_polling")
def test_a_rogue_sites_counts_beyond_its_commitment_do_not_move_the_scale() -> None:
    """A site that answers for 10^9 training images, all right at one scale, would pick the scale alone; beyond the
    counts its manifest committed to, its reply is left out and the honest site's counts choose."""
    models = _models()
    gen = torch.Generator().manual_seed(1)
    site_labels = torch.tensor([0] * 45 + [1] * 5)
    site_images = (2 * site_labels.float() - 1).reshape(-1, 1, 1, 1) * 0.3 + torch.randn(50, 1, 8, 8, generator=gen)
    honest = _site_counts(site_images, site_labels)
    expected = models.tuned_on(site_images.numpy(), site_labels.numpy(), CPU).scale
    loud = next(s for s in TUNING_SCALES if s != expected)

    def rogue(msg: Message) -> dict:
        hits = [10**9 if s == loud else 0 for s in TUNING_SCALES]
        return TuneReply.from_counts(np.array([5 * 10**8, 5 * 10**8]), np.array(hits)).to_metrics()

    site_of = {1: "honest", 2: "rogue"}
    committed = {"honest": Commitment((45, 5), (9, 1)), "rogue": Commitment((40, 10), (8, 2))}
    tuned, tuning = scoring.tune_at_sites(TuningGrid({1: honest, 2: rogue}), FEDERATION, models, [1, 2], site_of,
                                             committed, POOL)
    assert tuned.scale == expected and tuning["training_images"] == 50 and "more than the 40" in tuning["rejected"]["rogue"]
    believed = {"honest": committed["honest"], "rogue": Commitment((5 * 10**8, 5 * 10**8), None)}
    steered, _ = scoring.tune_at_sites(TuningGrid({1: honest, 2: rogue}), FEDERATION, models, [1, 2], site_of,
                                          believed, POOL)
    assert steered.scale == loud  # the same reply, had the rogue site committed to it: the test is not vacuous
