"""What a site does for each kind of request, as plain functions (no Flower types).

``answer_distill``: load local data -> distill -> seal -> (sealed bundle, metrics).
``answer_evaluate``: load local test data -> score the global model -> metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import torch

from shared.config import resolve_device
from shared.errors import DataError
from shared.schemas import DistillRequest, EvaluateRequest, MetricKey
from site_agent.data import load_site_images
from site_agent.distill import distill
from site_agent.evaluate import evaluate_global_model
from site_agent.identity import load_site_identity
from site_agent.release import seal_release
from site_agent.settings import SiteSettings

log = logging.getLogger(__name__)


def answer_distill(request: DistillRequest, settings: SiteSettings, progress: bool = True) -> tuple[bytes, dict[str, float]]:
    """Distill the site's training images as requested and seal the result.

    Raises:
        PolicyError, KeyFileError, DataError, ConfigError: with messages safe to send to the coordinator.
    """
    settings.policy.check(request)
    identity = load_site_identity(settings.site_id, settings.key_dir)  # fail before hours of work
    images = load_site_images(request.dataset, settings.data_root, settings.partition, settings.verify_md5)
    device = resolve_device(settings.device)
    log.info(
        "site %s: distilling %s with %s, ipc=%d, %d iterations on %s (%d local training images)",
        settings.site_id, request.dataset, request.distill.method.value, request.distill.ipc,
        request.distill.iterations, device, len(images.train),
    )
    synthetic = distill(
        images.train, images.info.num_classes, request.distill, device,
        progress=progress, min_real_per_class=settings.policy.min_real_per_class,
    )
    started = time.perf_counter()
    sealed = seal_release(synthetic, request, identity, images.info, num_real_examples=len(images.train))
    metrics = {
        MetricKey.NUM_EXAMPLES.value: float(len(images.train)),
        MetricKey.DISTILL_SECONDS.value: synthetic.seconds,
        MetricKey.SEAL_SECONDS.value: time.perf_counter() - started,
        MetricKey.BUNDLE_BYTES.value: float(len(sealed)),
        MetricKey.SYNTHETIC_IMAGES.value: float(len(synthetic.labels)),
    }
    log.info("site %s: released %d synthetic images in a %d-byte sealed bundle", settings.site_id,
             len(synthetic.labels), len(sealed))
    return sealed, metrics


def answer_evaluate(
    request: EvaluateRequest, state_dict: Mapping[str, torch.Tensor], settings: SiteSettings
) -> dict[str, float]:
    """Accuracy and AUC of the global model on the site's test images, with their count."""
    images = load_site_images(request.dataset, settings.data_root, settings.partition, settings.verify_md5)
    if len(images.test) == 0:
        raise DataError("this site holds no test images to evaluate on")
    accuracy, auc, count = evaluate_global_model(
        state_dict, request.model, images.test, images.info.task, resolve_device(settings.device)
    )
    return {MetricKey.ACCURACY.value: accuracy, MetricKey.AUC.value: auc, MetricKey.NUM_EXAMPLES.value: float(count)}
