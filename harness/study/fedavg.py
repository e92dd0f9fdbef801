"""The FedAvg arm of the study: Flower's own ``FedAvg`` strategy on the same simulated sites and partition.

Each round the sites train the global ConvNet for ``local_epochs`` on their training share
(``site_agent.fedavg``), FedAvg averages the weights by training images, and every site scores the
new model on its test share with the same summable counts as the pooled sets, so the figures are
the same pooled metrics. It runs until balanced accuracy has not improved by ``min_delta`` for
``patience`` rounds (a plateau), or ``max_rounds``. The reported figures are the last round's: picking
the best round would be choosing on the test split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from pydantic import BaseModel, ConfigDict, Field

from coordinator.evaluate import Metrics, parse_site_counts
from coordinator.messaging import wait_for_nodes
from harness.fedavg_site import FedAvgSites, build_fedavg_client_app
from harness.simulate import OFFLINE_FLOWER_ENV
from harness.study.traffic import content_bytes, traffic_mod
from shared.errors import FederationError
from shared.metrics import EvalCounts
from shared.models import build_model
from shared.schemas import EvaluateReply

HISTORY = "fedavg_history.json"
TRAFFIC = "traffic"


class FedAvgPlan(BaseModel):
    """How long and how hard the FedAvg arm trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: int = Field(ge=1)
    local_epochs: int = Field(2, ge=1)
    lr: float = Field(0.01, gt=0)
    batch: int = Field(256, ge=1)
    dsa: bool = True
    max_rounds: int = Field(50, ge=1)
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.005, ge=0)
    timeout_s: float = Field(3600.0, gt=0)


def summed_counts(num_classes: int):
    """FedAvg's ``evaluate_metrics_aggr_fn``: sum the sites' counts (never a weighted mean of their metrics)."""

    def aggregate(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
        total = EvalCounts.empty(num_classes)
        for content in replies:
            total = total + parse_site_counts(next(iter(content.metric_records.values())), num_classes)
        return MetricRecord(EvaluateReply.from_counts(total).to_metrics())

    return aggregate


def plateaued(balanced_accuracy: list[float], patience: int, min_delta: float) -> bool:
    """True once the last ``patience`` rounds brought no gain of ``min_delta`` over the best round before them."""
    if len(balanced_accuracy) <= patience:
        return False
    return max(balanced_accuracy[-patience:]) < max(balanced_accuracy[:-patience]) + min_delta


def build_fedavg_server_app(sites: FedAvgSites, plan: FedAvgPlan, run_dir: Path) -> ServerApp:
    """The ServerApp of the FedAvg arm; it writes ``<run_dir>/fedavg_history.json`` after every round."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        wait_for_nodes(grid, plan.sites, plan.sites, timeout=120.0)
        torch.manual_seed(sites.seed)
        arrays = ArrayRecord(build_model(sites.model).state_dict())
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=plan.sites,
                          min_evaluate_nodes=plan.sites, min_available_nodes=plan.sites,
                          evaluate_metrics_aggr_fn=summed_counts(sites.model.num_classes))
        history: list[dict[str, Any]] = []
        for number in range(1, plan.max_rounds + 1):
            started = time.perf_counter()
            sent_model = content_bytes(RecordDict({"arrays": arrays}))
            # One strategy round at a time, so the run can stop at a plateau.
            result = strategy.start(
                grid=grid, initial_arrays=arrays, num_rounds=1, timeout=plan.timeout_s,
                train_config=ConfigRecord({"round": number, "epochs": plan.local_epochs, "lr": plan.lr,
                                           "batch": plan.batch, "dsa": plan.dsa}),
            )
            summed = result.evaluate_metrics_clientapp.get(1)
            if summed is None or result.arrays is None:
                raise FederationError(f"FedAvg round {number}: not every site answered")
            arrays = result.arrays
            metrics = Metrics.of(parse_site_counts(summed, sites.model.num_classes))
            history.append({"round": number, "accuracy": metrics.accuracy,
                            "balanced_accuracy": metrics.balanced_accuracy, "auc": metrics.auc,
                            "model_bytes_sent": sent_model,  # the train message's model, and the evaluate one's
                            "model_bytes_evaluated": content_bytes(RecordDict({"arrays": arrays})),
                            "seconds": time.perf_counter() - started})
            (run_dir / HISTORY).write_text(json.dumps(history, indent=2) + "\n")
            if plateaued([h["balanced_accuracy"] for h in history], plan.patience, plan.min_delta):
                break

    return app


def run_fedavg(sites: FedAvgSites, plan: FedAvgPlan, run_dir: Path, backend: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the FedAvg arm on Flower's Simulation Engine; returns its per-round history.

    Raises:
        FederationError: the run did not complete a round.
    """
    os.environ.update(OFFLINE_FLOWER_ENV)
    from flwr.simulation import run_simulation

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / HISTORY).unlink(missing_ok=True)
    run_simulation(
        server_app=build_fedavg_server_app(sites, plan, run_dir),
        client_app=build_fedavg_client_app(sites, mods=(traffic_mod(run_dir / TRAFFIC),)),
        num_supernodes=plan.sites,
        backend_config=backend,
    )
    if not (run_dir / HISTORY).exists():
        raise FederationError("the FedAvg arm ended without completing a round")
    return json.loads((run_dir / HISTORY).read_text())
