"""The site's side of the FedAvg baseline of ``coordinator study`` (simulation only; never part of a release).

``train``    -> the received global model trained for a few epochs on the site's training share, and its
               number of training images (Flower's ``FedAvg`` weights by it);
``evaluate`` -> summable counts of the received model on the site's test share, as for the pooled sets.

FedAvg ships model weights every round instead of a synthetic set once: the study compares the two.
The share is the one ``load_site_images`` gives a simulated site, and its digest is recorded so the
study can check that both arms trained on the same partition.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config import resolve_device, simulated_site_id
from shared.errors import ConfigError
from shared.schemas import EvaluateReply, ModelSpec, PartitionScheme, first_problem
from shared.training import TrainSettings, train_classifier
from site_agent.data import SiteImages, load_site_images
from site_agent.evaluate import evaluate_global_model, load_global_model
from site_agent.partition import record_share
from site_agent.settings import PartitionSpec, SimulatedNode, parse_node_config


class FedAvgSites(BaseModel):
    """What every simulated FedAvg site is told by the study harness (the same for all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    data_root: str
    partition: PartitionScheme
    alpha: float = Field(gt=0)
    seed: int = Field(ge=0)
    model: ModelSpec
    device: str = "auto"
    share_dir: Path  # where each site notes the digest of the share it trained on


class LocalTraining(BaseModel):
    """The ``train`` message's config, checked at the door (Flower's FedAvg adds ``server-round``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    server_round: int = Field(alias="server-round", ge=1)
    round: int = Field(ge=1, le=10_000)
    epochs: int = Field(ge=1, le=10_000)
    lr: float = Field(gt=0)
    batch: int = Field(ge=1)
    dsa: bool


def build_fedavg_client_app(sites: FedAvgSites, mods: tuple = ()) -> ClientApp:
    """The ClientApp of every simulated site in the FedAvg arm."""
    app = ClientApp(mods=list(mods))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node = parse_node_config(SimulatedNode, context.node_config)
        images = _share(sites, node)
        config = _training(msg)
        model = load_global_model(msg.content["arrays"].to_torch_state_dict(), sites.model)
        # Each round and site draws its own batches and views, reproducibly.
        settings = TrainSettings(epochs=config.epochs, lr=config.lr, batch_size=config.batch, augment=config.dsa,
                                 seed=sites.seed * 10_000 + config.round * 100 + node.partition_id)
        train_classifier(model, torch.from_numpy(images.train.images), torch.from_numpy(images.train.labels),
                         settings, resolve_device(sites.device))
        content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()),
                              "metrics": MetricRecord({"num-examples": len(images.train)})})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        images = _share(sites, parse_node_config(SimulatedNode, context.node_config))
        counts = evaluate_global_model(msg.content["arrays"].to_torch_state_dict(), sites.model, images.test,
                                       resolve_device(sites.device))
        return Message(RecordDict({"metrics": MetricRecord(EvaluateReply.from_counts(counts).to_metrics())}),
                       reply_to=msg)

    return app


def _share(sites: FedAvgSites, node: SimulatedNode) -> SiteImages:
    """The node's share, loaded as every simulated site loads its own; its digest noted for the study."""
    spec = PartitionSpec(node.partition_id, node.num_partitions, sites.partition, sites.alpha, sites.seed)
    images = load_site_images(sites.dataset, sites.data_root, spec)
    record_share(sites.share_dir, simulated_site_id(node.partition_id), images.share_sha256 or "")
    return images


def _training(msg: Message) -> LocalTraining:
    record = msg.content.config_records.get("config")
    if record is None:
        raise ConfigError("train message carries no config")
    try:
        return LocalTraining.model_validate(dict(record))
    except ValidationError as exc:
        raise ConfigError(f"train config {first_problem(exc)}") from None
