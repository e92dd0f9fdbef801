"""Real runs on Flower's Simulation Engine with real BreastMNIST data (needs ../shared/data/medmnist).

The first test is the project's strongest: it records every reply every simulated site sends, and
fails if anything but a sealed bundle and plain numbers travels, or if any synthetic image is a
near copy of one of that site's real training or test images.
"""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.imbalance import TUNING_SCALES
from coordinator.summary import read_summary
from coordinator.trust import load_coordinator_keys
from harness.simulate import simulate
from harness.sites import run_shares
from shared.bundle import open_bundle
from shared.config import RunConfig
from shared.errors import FederationError
from shared.metrics import SCORE_BINS
from shared.schemas import EvaluateReply, MetricKey, TuneReply
from shared.wire import FieldKey, RecordKey
from site_agent.privacy.near_copy import nearest_real_similarity

pytestmark = [pytest.mark.flower, pytest.mark.realdata]

TINY = {"dataset": "breastmnist", "ipc": 2, "iterations": 2, "batch_real": 32, "outer_loop": 2, "inner_loop": 2,
            "net_width": 16, "net_depth": 3, "train_epochs": 20, "seed": 0, "node_wait_timeout": 60.0,
            "imbalance": "tuned-logit-adjust"}  # not the default: so the tuning messages are checked too
NEAR_COPY = 0.9


def _mods(record_dir: Path, tamper_partition: int):
    """A recording mod (what leaves each site) and, outside it, a tamperer that flips a byte of one site's bundle."""

    def record(msg, context, call_next):
        reply = call_next(msg, context)
        content = reply.content if reply.has_content() else None
        entry = {
            "partition": int(context.node_config["partition-id"]),
            "type": msg.metadata.message_type,
            "error": reply.error.reason if reply.has_error() else None,
            "config": {k: dict(v) for k, v in content.config_records.items()} if content else {},
            "metrics": {k: dict(v) for k, v in content.metric_records.items()} if content else {},
            "arrays": list(content.array_records) if content else [],
        }
        path = record_dir / f"{entry['partition']}-{msg.metadata.message_type}.pkl"
        path.write_bytes(pickle.dumps(entry))
        return reply

    def tamper(msg, context, call_next):
        reply = call_next(msg, context)
        if int(context.node_config["partition-id"]) == tamper_partition and reply.has_content():
            record = reply.content.config_records.get("bundle")
            if record is not None:
                sealed = record["sealed"]
                record["sealed"] = sealed[:-1] + bytes([sealed[-1] ^ 1])
        return reply

    return [tamper, record]


def test_simulation_releases_only_sealed_sets_and_survives_a_tampered_site(data_root: Path, tmp_path: Path) -> None:
    """3 sites, one bundle tampered in transit: it is rejected, the run completes, and nothing raw leaves a site.
    The run asks for soft labels, so their whole path (teacher, payload, pool, the sites' own training) is in it."""
    record_dir = tmp_path / "replies"
    record_dir.mkdir()
    config = RunConfig(data_root=str(data_root), sites=3, min_sites=2, out_dir=str(tmp_path / "out"),
                       soft_labels=True, teacher_epochs=3, **TINY)
    run_dir, summary = simulate(config, client_mods=_mods(record_dir, tamper_partition=0))
    shares = run_shares(config)  # what each simulated site held: split as the run split it

    # The run: site-0's tampered bundle is rejected for a stated reason; the others carry it through.
    by_status = {s.status: [] for s in summary.sites}
    for site in summary.sites:
        by_status[site.status].append(site)
    assert summary.status == "completed" and summary.sites_accepted == 2
    assert len(by_status["rejected"]) == 1 and "does not decrypt" in by_status["rejected"][0].reason
    assert {s.site_id for s in by_status["accepted"]} == {"site-1", "site-2"}
    pooled = summary.global_model
    committed = [shares[i].images for i in (1, 2)]  # the sites whose manifests signed their counts
    test_images = sum(len(site.test) for site in committed)
    assert pooled.num_examples == test_images and sum(pooled.class_counts) == test_images
    assert 0.0 <= pooled.balanced_accuracy <= 1.0 and 0.0 <= pooled.auc <= 1.0
    # The rejected site (unnamed in simulation: its bundle did not open) committed no counts: listed, not asked.
    assert len(summary.per_site) == 3 and {"site-1", "site-2"} <= {e.site_id for e in summary.per_site}
    assert sum("not asked: committed no test counts" in e.problem for e in summary.per_site) == 1
    for name in ("summary.json", "report.md", "run_config.json", "synthetic_grid.png", "global_model.pt"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "run_config.json").read_text())["ipc"] == 2
    # Each accepted site's privacy report, signed into its manifest, reaches the summary and the report.
    for site in by_status["accepted"]:
        privacy = site.privacy
        assert privacy.threshold_attack.auc.low <= privacy.threshold_attack.auc.value
        assert privacy.members == site.real_train_images
    assert "Privacy reports" in (run_dir / "report.md").read_text()
    assert "site-1, site-2: soft labels from a teacher the site trained for 3 epochs" in (run_dir / "report.md").read_text()

    # The correction was tuned on the committed sites' training shares, not on test images.
    assert pooled.tuning.sites == 2 and pooled.tuning.training_images == sum(len(s.train) for s in committed)
    assert pooled.tuning.scale in TUNING_SCALES and "training images at 2 sites" in (run_dir / "report.md").read_text()

    # Every reply every site sent: 3 distill, and 2 tune + 2 evaluate from the sites with a commitment.
    replies = [pickle.loads(p.read_bytes()) for p in sorted(record_dir.glob("*.pkl"))]
    assert sorted((r["partition"], r["type"]) for r in replies) == [(0, "query.distill")] + [
        (i, t) for i in (1, 2) for t in ("evaluate", "query.distill", "query.tune")
    ]
    keys = load_coordinator_keys(run_dir / "keys" / "coordinator")
    allowed_metrics = {m.value for m in MetricKey}
    released = []
    for reply in replies:
        assert reply["error"] is None and reply["arrays"] == []
        assert set(reply["metrics"]) == {RecordKey.METRICS}
        metrics = reply["metrics"][RecordKey.METRICS]
        assert set(metrics) <= allowed_metrics
        if reply["type"] == "evaluate":
            # Only integer counts whose size depends on the number of classes, never on the images.
            assert reply["config"] == {}
            assert EvaluateReply.model_validate(metrics).counts(2).num_examples == metrics[MetricKey.NUM_EXAMPLES]
            assert {k: 1 if isinstance(v, int) else len(v) for k, v in metrics.items()} == {
                MetricKey.NUM_EXAMPLES: 1, MetricKey.CLASS_COUNTS: 2, MetricKey.CONFUSION: 4,
                MetricKey.SCORE_HISTOGRAMS: 2 * 2 * SCORE_BINS,
            }
            assert all(isinstance(x, int) for v in metrics.values() for x in (v if isinstance(v, list) else [v]))
            continue
        if reply["type"] == "query.tune":
            # Class counts and one hit count per scale of the grid: sizes set by classes and scales, never by images.
            assert reply["config"] == {}
            class_counts, hits = TuneReply.model_validate(metrics).checked(2)
            assert {k: 1 if isinstance(v, int) else len(v) for k, v in metrics.items()} == {
                MetricKey.NUM_EXAMPLES: 1, MetricKey.CLASS_COUNTS: 2, MetricKey.HITS: len(TUNING_SCALES)}
            assert class_counts.sum() == metrics[MetricKey.NUM_EXAMPLES] and (hits <= class_counts.sum()).all()
            assert all(isinstance(x, int) for v in metrics.values() for x in (v if isinstance(v, list) else [v]))
            continue
        assert all(isinstance(v, float) for v in metrics.values())
        assert set(reply["config"]) == {RecordKey.BUNDLE}
        assert set(reply["config"][RecordKey.BUNDLE]) == {FieldKey.SEALED}
        sealed = reply["config"][RecordKey.BUNDLE][FieldKey.SEALED]
        opened = open_bundle(sealed, keys.private_key, keys.verify_key_for, 1 << 26)
        released.append(torch.from_numpy(opened.images))
        assert opened.manifest.soft_labels == config.soft_label_spec() and opened.soft_labels is not None
        assert opened.soft_labels.shape == (len(opened.labels), 2)
        site = shares[reply["partition"]].images
        assert opened.manifest.site_id == f"site-{reply['partition']}"
        for split in (site.train, site.test):
            real = torch.from_numpy(split.images)
            assert nearest_real_similarity(torch.from_numpy(opened.images), real) < NEAR_COPY
            # No real image, in the site's normalised float16 or raw uint8 form, appears byte for byte.
            raw = np.round((split.images + 1) * 127.5).astype(np.uint8)
            for image_f16, image_u8 in zip(split.images.astype("<f2"), raw, strict=True):
                assert image_f16.tobytes() not in sealed and image_u8.tobytes() not in sealed
    # One request, one seed, yet each site starts from its own noise: no site's set repeats another's.
    assert len(released) == 3
    for first, second in itertools.combinations(released, 2):
        assert nearest_real_similarity(first, second) < NEAR_COPY


def test_run_stops_cleanly_when_too_few_sites_remain(data_root: Path, tmp_path: Path) -> None:
    """With min-sites=2 and one of two bundles tampered, the run fails with a reason and no model."""
    config = RunConfig(data_root=str(data_root), sites=2, min_sites=2, out_dir=str(tmp_path / "out"), **TINY)
    with pytest.raises(FederationError, match="fewer than min-sites"):
        simulate(config, client_mods=_mods(tmp_path, tamper_partition=1)[:1])
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]  # .site-cache: the sites'
    summary = read_summary(run_dir)
    assert summary.status == "failed" and summary.sites_accepted == 1
    assert not (run_dir / "global_model.pt").exists()
