"""Evaluating the global model on the site's own test images; only the metrics leave the site."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from shared.errors import InvalidBundle
from shared.metrics import accuracy_and_auc
from shared.models import build_model
from shared.schemas import ModelSpec
from shared.training import predict_scores
from site_agent.data import LabelledImages


def evaluate_global_model(
    state_dict: Mapping[str, torch.Tensor], spec: ModelSpec, test: LabelledImages, task: str, device: torch.device
) -> tuple[float, float, int]:
    """(accuracy, AUC, number of test images) of the received model on local test data.

    Raises:
        InvalidBundle: the weights do not fit the announced model spec.
    """
    model = build_model(spec)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except (RuntimeError, KeyError) as exc:
        raise InvalidBundle("received model weights do not match the announced model spec") from exc
    scores = predict_scores(model, torch.from_numpy(test.images), device)
    accuracy, auc = accuracy_and_auc(test.labels, scores, task)
    return accuracy, auc, len(test)
