"""The whole spine in one process on tiny generated data: distill -> seal -> receive -> pool -> train -> evaluate."""

from __future__ import annotations

import secrets

import pytest
import torch

from coordinator.evaluate import SiteEvaluation, aggregate
from coordinator.pool import pool
from coordinator.receive import Expectation, receive_bundle
from coordinator.train import train_global
from shared.datasets import DatasetInfo
from shared.methods import DCConfig, DMConfig, DPDMConfig, IDMConfig, MTTConfig, NetworkSpec
from shared.schemas import DistillRequest, ModelSpec
from shared.training import TrainSettings
from site_agent.distill import distill
from site_agent.evaluate import evaluate_global_model
from site_agent.release import seal_release
from tests.conftest import blobs

CPU = torch.device("cpu")
NET = NetworkSpec(depth=2, width=16)
INFO = DatasetInfo("breastmnist", "binary-class", 1, 2, {0: "a", 1: "b"}, {})


METHODS = {
    "dc": DCConfig(ipc=2, iterations=5, batch_real=16, outer_loop=2, inner_loop=1, network=NET),
    "dm": DMConfig(ipc=2, iterations=30, batch_real=16, network=NET),
    "idm": IDMConfig(ipc=2, iterations=30, batch_real=16, network=NET),
    "mtt": MTTConfig(ipc=2, iterations=10, num_experts=1, train_epochs_expert=3, max_start_epoch=1, expert_epochs=1,
                     syn_steps=3, lr_img=100, lr_lr=1e-6, network=NET),
    "dpdm": DPDMConfig(ipc=2, iterations=30, epsilon=4.0, network=NET),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_sites_end_to_end(keys, method, tmp_path) -> None:
    """Two sites' sets are accepted, pooled, and train a model that beats chance on every site's test data."""
    coordinator, sites = keys
    data = {name: blobs(size=28, seed=0, per_class=30 + 10 * i) for i, name in enumerate(sites)}
    accepted, delivered = [], set()
    for name, identity in sites.items():
        request = DistillRequest(run_id="r1", nonce=secrets.token_hex(32), dataset="breastmnist",
                                 distill=METHODS[method])
        synthetic = distill(data[name], 2, request.distill, CPU, progress=False, expert_cache_dir=tmp_path / name)
        sealed = seal_release(synthetic, request, identity, INFO, len(data[name]))
        opened = receive_bundle(sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), coordinator, delivered)
        delivered.add(opened.manifest.site_id)
        accepted.append(opened)
    pooled = pool(accepted)
    assert pooled.images_per_site == {"site-0": 4, "site-1": 4}
    spec = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NET)
    model = train_global(pooled, spec, TrainSettings(epochs=40, augment=False), CPU)
    evaluations = []
    for node, name in enumerate(sites):
        test = blobs(size=28, seed=0, per_class=25)
        counts = evaluate_global_model(model.state_dict(), spec, test, CPU)
        evaluations.append(SiteEvaluation(name, node, counts))
    report = aggregate(evaluations, 2)
    assert report.pooled.accuracy > 0.8 and report.num_examples == 100
    assert report.pooled.balanced_accuracy > 0.8 and report.pooled.auc > 0.8
