"""One run's connected federation: the sites that joined, what their bundles must match, and how a request
travels (the records of ``shared.wire``). ``connect`` is the run's first stage."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from coordinator import report, run_state
from coordinator.binding import NodeBinding, bind_nodes
from coordinator.messaging import wait_for_nodes
from coordinator.receive import Expectation
from coordinator.trust import CoordinatorKeys, create_simulation_keys, load_coordinator_keys
from shared.bundle import OpenedBundle
from shared.config import RunConfig, simulated_site_id
from shared.datasets import IMAGE_SIZE, DatasetInfo, dataset_info
from shared.keys import SIMULATION_KEYS
from shared.models import ConvNet, build_model
from shared.schemas import DistillRequest, EvaluateRequest, ModelSpec, TuneRequest
from shared.wire import FieldKey, RecordKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Federation:
    """The connected sites of one run and what their bundles must match."""

    run_dir: Path
    config: RunConfig
    state: run_state.RunState
    info: DatasetInfo
    spec: ModelSpec
    keys: CoordinatorKeys
    node_ids: list[int]
    bindings: dict[int, NodeBinding]

    def expectation(self, request: DistillRequest, site_id: str | None) -> Expectation:
        shape = (self.spec.in_channels, self.spec.image_size, self.spec.image_size)
        return Expectation(request, shape, self.info.num_classes, int(self.config.max_bundle_mb * 2**20), site_id)


def connect(grid: Grid, config: RunConfig, run_dir: Path) -> Federation:
    """Start (or resume) the run's state, wait for the sites and bind each node to its registered site."""
    state, config = run_state.start(run_dir, config)
    if config.resume:
        report.keep_earlier_attempt(run_dir)
    report.write_run_config(run_dir, config)
    info = dataset_info(config.dataset)
    node_ids = wait_for_nodes(grid, config.sites, config.min_sites, config.node_wait_timeout)
    keys = _coordinator_keys(config, run_dir, len(node_ids))
    wanted = set(node_ids)
    bindings = bind_nodes([n for n in grid.get_nodes() if n.node_id in wanted], keys.sites, keys.node_keys,
                          keys.revoked)
    if config.keys_dir and any(b.site_id is None for b in bindings.values()):
        log.warning("nodes without registered names: SuperNode authentication is off, so a bundle's site is "
                    "vouched for by its signature alone")
    spec = ModelSpec(in_channels=info.in_channels, num_classes=info.num_classes, image_size=IMAGE_SIZE,
                     network=config.network())
    return Federation(run_dir, config, state, info, spec, keys, node_ids, bindings)


def site_key(binding: NodeBinding) -> str:
    """Where a node's request and bundle are kept: its site id, or ``node-<id>`` for an unnamed (simulated) node."""
    return binding.site_id or f"node-{binding.node_id}"


def _coordinator_keys(config: RunConfig, run_dir: Path, num_nodes: int) -> CoordinatorKeys:
    if config.keys_dir:
        return load_coordinator_keys(Path(config.keys_dir).expanduser())
    site_ids = [simulated_site_id(i) for i in range(max(config.sites, num_nodes))]
    return load_coordinator_keys(create_simulation_keys(run_dir / SIMULATION_KEYS, site_ids))


def request_record(
    request: DistillRequest | EvaluateRequest | TuneRequest, model: ConvNet | None = None,
    pool: Sequence[bytes] | None = None,
) -> RecordDict:
    """A request as JSON, with the global model's weights where a refinement round is guided by them, or the
    pooled sets where a site scores the model it trains itself on them (evaluate, tune)."""
    records: dict[str, Any] = {RecordKey.REQUEST: ConfigRecord({FieldKey.REQUEST_JSON: request.model_dump_json()})}
    if model is not None:
        records[RecordKey.ARRAYS] = ArrayRecord(model.state_dict())
    if pool is not None:
        records[RecordKey.POOL] = ConfigRecord({FieldKey.SETS: list(pool)})
    return RecordDict(records)


def forwarded_pool(federation: Federation, bundles: Sequence[OpenedBundle]) -> list[bytes]:
    """The pooled sets as the sites receive them to train the model they score: each as its site signed it,
    under the key it was verified with (``shared.bundle.ForwardedSet``)."""
    return [b.forwarded(federation.keys.verify_key_for(b.manifest.site_id)).to_bytes() for b in bundles]


def model_bytes(model: ConvNet | None) -> int:
    """What one copy of the model's weights weighs on the wire (the arrays, without framing)."""
    return 0 if model is None else sum(t.numel() * t.element_size() for t in model.state_dict().values())


def previous_round(federation: Federation) -> tuple[dict[str, OpenedBundle], ConvNet | None]:
    """When resuming a refinement round: the last round's sets (re-verified) and global model."""
    state = federation.state
    if state.round == 1:
        return {}, None
    sets = run_state.reverify_stored(federation.run_dir, state, federation.expectation, federation.keys,
                                     state.round - 1)
    model = build_model(federation.spec)
    model.load_state_dict(torch.load(federation.run_dir / "global_model.pt", weights_only=True))
    return {b.manifest.site_id: b for b in sets.values()}, model.eval()
