"""Evaluating the global model on the site's own test images; only summable counts leave the site."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from shared.errors import InvalidBundle
from shared.metrics import EvalCounts
from shared.models import ConvNet, build_model
from shared.schemas import ModelSpec
from shared.training import model_counts
from site_agent.data import LabelledImages


def load_global_model(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec) -> ConvNet:
    """The coordinator's global model, rebuilt from its announced spec.

    Raises:
        InvalidBundle: the weights do not fit the announced model spec.
    """
    model = build_model(spec)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except (RuntimeError, KeyError) as exc:
        raise InvalidBundle("received model weights do not match the announced model spec") from exc
    return model.eval()


def evaluate_global_model(
    state_dict: Mapping[str, torch.Tensor], spec: ModelSpec, test: LabelledImages, device: torch.device
) -> EvalCounts:
    """Class counts, confusion matrix and score histograms of the received model on local test data.

    A site with no test images returns all-zero counts, so the coordinator can report it as such.

    Raises:
        InvalidBundle: the weights do not fit the announced model spec.
    """
    model = load_global_model(state_dict, spec)
    return model_counts(model, test.images, test.labels, spec.num_classes, device)
