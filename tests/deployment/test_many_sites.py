"""Many sites at once: a 20-site simulation at the smallest settings completes, every site pooled and scored.

About 30 s on two cores. Its cost against the number of sites is in docs/benchmarks.md
(scripts/benchmark_many_sites.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.simulate import simulate
from shared.config import RunConfig
from site_agent.data import read_local_data

pytestmark = [pytest.mark.live, pytest.mark.flower, pytest.mark.realdata]

SMALLEST = {"dataset": "breastmnist", "ipc": 1, "iterations": 2, "batch_real": 16, "outer_loop": 1, "inner_loop": 1,
            "net_width": 16, "train_epochs": 10, "privacy_report": False, "method": "dc", "partition": "iid",
            "node_wait_timeout": 600.0, "distill_timeout": 1800.0, "evaluate_timeout": 900.0}


def test_twenty_sites_all_deliver_and_all_their_test_images_are_scored(data_root: Path, tmp_path: Path) -> None:
    config = RunConfig(data_root=str(data_root), sites=20, min_sites=20, out_dir=str(tmp_path), **SMALLEST)
    _, summary = simulate(config, yardstick=False)
    assert summary.status == "completed" and summary.sites_accepted == 20
    assert sorted(s.site_id for s in summary.sites) == sorted(f"site-{i}" for i in range(20))
    assert summary.pooled.images == sum(summary.pooled.images_per_site.values())
    test_split = len(read_local_data(data_root, "breastmnist").splits["test"].labels)
    assert summary.global_model.num_examples == test_split  # every site's share, none dropped
    assert len(summary.per_site) == 20 and all(not e.problem for e in summary.per_site)
