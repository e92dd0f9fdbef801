"""report.html: one self-contained page a person opens offline, checked in a real headless Chromium.

The results folder is built by the same functions a run uses (build_summary, write_results), with one
site that sent a hostile error reason: the page must show it as text, and fetch nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.evaluate import SiteEvaluation, aggregate
from coordinator.pool import PooledSet
from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report import write_results, write_run_config
from coordinator.summary import BytesMoved, RoundRecord, RunStatus, build_summary
from shared.config import RunConfig
from shared.datasets import dataset_info
from shared.metrics import EvalCounts
from shared.untrusted import untrusted_text

HOSTILE = 'crashed <script>alert(1)</script> ![x](http://198.51.100.7/x.png) <img src="https://198.51.100.7/y.png">'
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished 3-site BreastMNIST run: two sets pooled, one site rejected with a hostile reason."""
    info = dataset_info("breastmnist")
    rng = np.random.default_rng(0)
    config = RunConfig(dataset="breastmnist", sites=3, ipc=2)
    outcomes = [
        SiteOutcome(1, "site-a", OutcomeStatus.ACCEPTED, bundle_bytes=9000, metrics={"distill-seconds": 12.5},
                    class_counts={0: 2, 1: 2}, real_class_counts={0: 40, 1: 110}),
        SiteOutcome(2, "site-b", OutcomeStatus.ACCEPTED, bundle_bytes=9100, metrics={"distill-seconds": 13.0},
                    class_counts={0: 2, 1: 2}, real_class_counts={0: 90, 1: 20}),
        SiteOutcome(3, "site-c", OutcomeStatus.REJECTED, reason=untrusted_text(HOSTILE)),
    ]
    pooled = PooledSet(torch.from_numpy(rng.uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)),
                       torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), {"site-a": 4, "site-b": 4})
    evaluations = []
    for node, site in ((1, "site-a"), (2, "site-b"), (3, "site-c")):
        labels = rng.integers(0, 2, 50)
        scores = np.clip(0.6 * np.eye(2)[labels] + rng.uniform(0, 0.6, (50, 2)), 0, None)
        evaluations.append(SiteEvaluation(site, node, EvalCounts.from_scores(labels, scores / scores.sum(1, keepdims=True))))
    report = aggregate(evaluations, info.num_classes)
    summary = build_summary(config, "run-7", outcomes, pooled, info, {"global": report}, {"train": 3.2},
                            RunStatus.COMPLETED, correction="logit-adjust")
    assert summary.global_model is not None
    summary.rounds = [RoundRecord(round=1, bytes=BytesMoved(up=18100, down=5000, cumulative=23100), sites_accepted=2,
                                  global_model=summary.global_model)]
    folder = tmp_path / "run-7"
    write_run_config(folder, config)
    write_results(folder, summary, pooled, info)
    return folder


def test_the_page_holds_every_part_inline_and_the_hostile_reason_only_as_text(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # rounds, coverage, grid
    assert "<script" not in page and "(script)alert(1)(/script)" in page  # shown, as text
    assert not re.search(r'(src|href)="(https?:|//)', page) and "<a " not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for part in ("Pooled confusion matrix", "site-a", "site-c", "Settings and software", "torch", "flwr",
                 "logit-adjust", "Written 20"):
        assert part in page, part


@pytest.mark.live
@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium_with_every_image_loaded_and_nothing_fetched(
    run_dir: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    page_url = (run_dir / "report.html").as_uri()
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        try:
            context = browser.new_context()
            context.route("**/*", lambda route: (requested.append(route.request.url), route.continue_()))
            page = context.new_page()
            page.goto(page_url, wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth}))")
            heading = page.inner_text("h1")
            table_rows = page.locator("table tr").count()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert heading == "Run run-7: completed"
    assert len(images) == 3 and all(i["complete"] and i["width"] > 0 for i in images), images
    assert table_rows > 10
    assert [url for url in requested if url != page_url and not url.startswith("data:")] == [], requested
