"""The sites' side of the FedAvg baseline of ``coordinator study`` (simulation only; never part of a release).

``train``    -> the received global model trained for a few epochs on the site's training share, and its
               number of training images (Flower's ``FedAvg`` weights by it);
``evaluate`` -> summable counts of the received model on the site's test share, as for the pooled sets.

FedAvg ships model weights every round instead of a synthetic set once: the study compares the two.
Each site reads its share from the export the harness wrote for it (``harness.sites``), as the
pooled arm's sites do, so the study can check that both arms trained on the same partition.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.sites import node_index
from shared.config import resolve_device
from shared.errors import ConfigError
from shared.fields import first_problem
from shared.schemas import EvaluateReply, ModelSpec
from shared.training import TrainSettings, train_classifier
from site_agent.data import load_site_images
from site_agent.evaluate import evaluate_global_model, load_global_model
from site_agent.labelled import SiteImages


class FedAvgSites(BaseModel):
    """What every simulated FedAvg site is told by the study harness (the same for all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    exports: list[str]  # each site's share as an .npz export, by partition id (harness.sites.write_export)
    seed: int = Field(ge=0)
    model: ModelSpec
    device: str = "auto"


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
        index = node_index(context)
        images = _share(sites, index)
        config = _training(msg)
        model = load_global_model(msg.content["arrays"].to_torch_state_dict(), sites.model)
        # Each round and site draws its own batches and views, reproducibly.
        settings = TrainSettings(epochs=config.epochs, lr=config.lr, batch_size=config.batch, augment=config.dsa,
                                 seed=sites.seed * 10_000 + config.round * 100 + index)
        train_classifier(model, torch.from_numpy(images.train.images), torch.from_numpy(images.train.labels),
                         settings, resolve_device(sites.device))
        content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()),
                              "metrics": MetricRecord({"num-examples": len(images.train)})})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        images = _share(sites, node_index(context))
        counts = evaluate_global_model(msg.content["arrays"].to_torch_state_dict(), sites.model, images.test,
                                       resolve_device(sites.device))
        return Message(RecordDict({"metrics": MetricRecord(EvaluateReply.from_counts(counts).to_metrics())}),
                       reply_to=msg)

    return app


def _share(sites: FedAvgSites, index: int) -> SiteImages:
    """The node's share, read from its export as the pooled arm's sites read theirs."""
    return load_site_images(sites.dataset, sites.exports[index], verify_md5=False)


def _training(msg: Message) -> LocalTraining:
    record = msg.content.config_records.get("config")
    if record is None:
        raise ConfigError("train message carries no config")
    try:
        return LocalTraining.model_validate(dict(record))
    except ValidationError as exc:
        raise ConfigError(f"train config {first_problem(exc)}") from None
