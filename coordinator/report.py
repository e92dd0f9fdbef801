"""The results folder of a run: resolved config, summary.json, a picture of the pooled set, a short report.

::

    <run-dir>/run_config.json      the resolved settings of this run
    <run-dir>/summary.json         sites accepted/rejected with reasons, bytes, timings, metrics
    <run-dir>/synthetic_grid.png   the pooled synthetic images, grouped by site, one row per class
    <run-dir>/rounds.png           balanced accuracy and AUC per round, against bytes moved
    <run-dir>/class_coverage.png   per class, what each accepted site holds
    <run-dir>/report.md            the same summary for people, in a terminal
    <run-dir>/report.html          the same again as one self-contained page, with the plots and the grid inline
    <run-dir>/global_model.pt      the trained global model's state dict
    <run-dir>/bundles/             the sealed bundles as received (still encrypted)
    <run-dir>/attempts/<n>/        an earlier attempt's summary, reports and plots, kept when the run is resumed
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image

from coordinator.plots import plot_class_coverage, plot_rounds
from coordinator.pool import PooledSet
from coordinator.receive import OutcomeStatus
from coordinator.report_html import render_html
from coordinator.summary import (
    SUMMARY_FILE,
    EarlierAttempt,
    GlobalEvaluation,
    PooledMetrics,
    RunSummary,
    SiteEntry,
    SiteScore,
    SummaryError,
    read_summary,
)
from shared.config import RunConfig
from shared.datasets import DatasetInfo
from shared.grid import image_grid, titled_stack
from shared.manifest import AttackSummary
from shared.untrusted import untrusted_text

log = logging.getLogger(__name__)


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(json.dumps(config.to_flower(), indent=2) + "\n")


def write_results(run_dir: Path, summary: RunSummary, pooled: PooledSet | None, info: DatasetInfo) -> None:
    """The pictures (when there is a pooled set: the grid; once a round is scored: rounds.png), then summary.json
    and both reports, which show them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if pooled is not None:
        synthetic_grid(pooled, info).save(run_dir / "synthetic_grid.png")
    if summary.rounds:
        plot_rounds(summary.rounds, run_dir / "rounds.png")
    plot_class_coverage(summary.sites, list(info.label_names.values()), run_dir / "class_coverage.png")
    write_summary(run_dir, summary)


ATTEMPTS = "attempts"
_ATTEMPT_FILES = (SUMMARY_FILE, "report.md", "report.html", "rounds.png", "class_coverage.png",
                  "synthetic_grid.png")


def keep_earlier_attempt(run_dir: Path) -> Path | None:
    """Before a resumed run writes its results, move the stopped attempt's into ``attempts/<n>/``; returns it."""
    if not (run_dir / SUMMARY_FILE).is_file():
        return None
    folder = run_dir / ATTEMPTS / str(len(list((run_dir / ATTEMPTS).glob("*"))) + 1)
    folder.mkdir(parents=True)
    for name in _ATTEMPT_FILES:
        if (run_dir / name).is_file():
            (run_dir / name).rename(folder / name)
    return folder


def _earlier_attempts(run_dir: Path) -> list[EarlierAttempt]:
    attempts = []
    for folder in sorted((run_dir / ATTEMPTS).glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        try:
            earlier = read_summary(folder / SUMMARY_FILE)
        except SummaryError as exc:
            log.warning("an earlier attempt is not listed in the report: %s", exc)
            continue
        attempts.append(EarlierAttempt(folder=f"{ATTEMPTS}/{folder.name}", status=earlier.status,
                                       sites_accepted=earlier.sites_accepted, error=earlier.error))
    return attempts


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.json, report.md and report.html, listing the earlier attempts of a resumed run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summary.model_copy(update={"earlier_attempts": _earlier_attempts(run_dir)})
    (run_dir / SUMMARY_FILE).write_text(summary.to_json())
    report_md = render_report(summary)
    (run_dir / "report.md").write_text(report_md)
    (run_dir / "report.html").write_text(render_html(report_md, summary, run_dir), encoding="utf-8")


def synthetic_grid(pooled: PooledSet, info: DatasetInfo) -> Image.Image:
    """One block per site (in pool order), each one row per class with its synthetic images (up to 30), upscaled."""
    blocks, start = [], 0
    for site, count in pooled.images_per_site.items():
        images, labels = pooled.images[start:start + count].numpy(), pooled.labels[start:start + count].numpy()
        blocks.append((f"{site}: {count} images", image_grid(images, labels, info.label_names)))
        start += count
    return titled_stack(blocks)


def render_report(summary: RunSummary) -> str:
    """A short Markdown report of the run."""
    lines = [
        f"# Run {summary.run_id}: {summary.status}",
        "",
        (
            f"{summary.dataset}, method {summary.method}, ipc {summary.ipc}, {summary.iterations} "
            f"iterations; {summary.sites_accepted} of {summary.sites_expected} sites accepted."
        ),
    ]
    if summary.error:
        lines += ["", f"**Stopped:** {summary.error}"]
    if summary.global_model is not None:
        lines += ["", *headline(summary.global_model, summary.uncorrected)]
    for attempt in summary.earlier_attempts:
        lines += ["", f"Resumed: an earlier attempt ({attempt.folder}/report.md) ended {attempt.status} with "
                      f"{attempt.sites_accepted} sites accepted" + (f": {attempt.error}" if attempt.error else "")]
    by_status = summary.sites_by_status
    held, declined = by_status.get(OutcomeStatus.AWAITING_APPROVAL, 0), by_status.get(OutcomeStatus.REJECTED_AT_SITE, 0)
    if held or declined:
        lines += ["", (f"Site review: {held} sites' releases await their operators' approval, {declined} were rejected "
                      "by the site's own reviewer (nothing was sent by them).")]
    lines += ["", "| site | node | status | reason | bundle bytes | distill s |", "|---|---|---|---|---|---|"]
    for s in summary.sites:
        lines.append(
            f"| {s.site_id or '?'} | {s.node_id if s.node_id is not None else '-'} | {s.status} | {s.reason} | "
            f"{s.bundle_bytes} | {_fmt(s.distill_seconds)} |"
        )
    if any(s.preprocessing for s in summary.sites):
        lines += ["", preprocessing_line(summary.sites)]
    if any(s.status == OutcomeStatus.ACCEPTED for s in summary.sites):
        lines += ["", labels_line(summary.sites)]
    if any(s.dp for s in summary.sites):
        lines += ["", *_dp_section(summary.sites)]
    if any(s.privacy for s in summary.sites):
        lines += ["", *_privacy_section(summary.sites)]
    if summary.global_model is not None:
        lines += ["", *_global_section(summary.global_model, summary.uncorrected, summary.per_site)]
    if summary.yardstick is not None and summary.global_model is not None:
        lines += ["", *_yardstick_section(summary)]
    if len(summary.rounds) > 1:
        lines += ["", "| round | sites delivered | accuracy | balanced accuracy | macro AUC | MB moved (cumulative) |",
                  "|---|---|---|---|---|---|"]
        for r in summary.rounds:
            g = r.global_model
            lines.append(f"| {r.round} | {r.sites_accepted} | {_fmt(g.accuracy)} | "
                         f"{_fmt(g.balanced_accuracy)} | {_fmt(g.auc)} | {r.bytes.cumulative / 1e6:.2f} |")
        lines += ["", "![metrics per round](rounds.png)"]
    lines += ["", "Stage seconds: " + ", ".join(f"{k} {v}" for k, v in summary.stage_seconds.items()), ""]
    return "\n".join(lines)


def preprocessing_line(sites: list[SiteEntry]) -> str:
    """One sentence: how each site that resized its images did so, as its signed manifest records it.

    The site id and the manifest's words are the site's, so they pass through ``untrusted_text``.
    """
    done, size = [], ""
    for s in sites:
        if (p := s.preprocessing) is None:
            continue
        size = f"{p.resized_to}x{p.resized_to}"
        how = "centre-cropped to a square and resized" if p.cropped else "resized"
        done.append(untrusted_text(f"{s.site_id or '?'} {how} its {p.source_size()} images to {size} "
                                   f"({p.method.value.upper()})"))
    kept = any(s.status == OutcomeStatus.ACCEPTED and s.preprocessing is None for s in sites)
    rest = f"; the other accepted sites' images were already {size}" if kept else ""
    return "Preprocessing, as each manifest records it: " + "; ".join(done) + rest + "."


def labels_line(sites: list[SiteEntry]) -> str:
    """One sentence: which accepted sets carry soft labels from their site's teacher, as each manifest records it."""
    accepted = [s for s in sites if s.status == OutcomeStatus.ACCEPTED]
    by_spec: dict[str, list[str]] = {}
    for s in accepted:
        spec = s.soft_labels
        how = ("classes only" if spec is None else
               f"soft labels from a teacher the site trained for {spec.teacher_epochs} epochs, temperature {spec.temperature:g}")
        by_spec.setdefault(how, []).append(untrusted_text(s.site_id or "?"))
    return "Labels, as each manifest records them: " + "; ".join(f"{', '.join(who)}: {how}" for how, who in by_spec.items()) + "."


MIN_CLASS_TEST_IMAGES = 20  # a class with fewer test images has too noisy a recall to warn about
LOW_RECALL = 0.2


def neglected_classes(g: GlobalEvaluation) -> list[tuple[str, int, float]]:
    """(class, test images, recall) of each class with enough test images that the model rarely predicts."""
    return [(name, count, recall) for name, count, recall in zip(g.class_names, g.class_counts, g.recall, strict=True)
            if count >= MIN_CLASS_TEST_IMAGES and recall is not None and recall < LOW_RECALL]


def headline(g: GlobalEvaluation, uncorrected: PooledMetrics | None) -> list[str]:
    """What a clinician should read first: balanced accuracy, macro AUC and every class's recall with its test
    count; accuracy only beside the majority rate; and, in words, any class the model rarely finds."""
    warnings = [f"**{name}: the global model finds {_fmt(recall)} of its {count} test images.** Its accuracy hides "
                "this; do not use the model for this class." for name, count, recall in neglected_classes(g)]
    lines = [*warnings, *([""] if warnings else []), (
        f"Balanced accuracy **{_fmt(g.balanced_accuracy)}**, macro AUC **{_fmt(g.auc)}** over "
        f"{g.num_examples} test images at the sites (accuracy {_fmt(g.accuracy)}; always predicting the "
        f"majority class: {_fmt(g.majority_rate)}).")]
    corrected = uncorrected if g.correction != "none" else None
    if corrected is not None:
        lines += ["", (f"The model is corrected for the sites' class mix ({g.correction}), which favours accuracy: "
                       "each class's recall is shown beside the uncorrected model's (balanced accuracy "
                       f"{_fmt(corrected.balanced_accuracy)}), so what the correction costs each class is plain.")]
    columns = [g.class_names, g.class_counts, g.recall, *([corrected.recall] if corrected else [])]
    lines += ["", "| class | test images | recall |" + (" recall without correction |" if corrected else ""),
              "|---|---|---|" + ("---|" if corrected else "")]
    for name, count, *recalls in zip(*columns, strict=True):
        lines.append(f"| {name} | {count} | " + " | ".join(_fmt(r) for r in recalls) + " |")
    return lines


def _global_section(g: GlobalEvaluation, uncorrected: PooledMetrics | None, per_site: list[SiteScore]) -> list[str]:
    """Pooled metrics of the global model over every site's test share, per class, then per site."""
    noisy = sorted({e.epsilon for e in per_site if e.epsilon is not None})
    noise = (f" Sites answered with noise (ε {', '.join(f'{x:g}' for x in noisy)} per answer), which moves every "
             "figure further: at ε 1 the dev sets' pooled figures moved by 0.01 to 0.07 (docs/benchmarks.md)."
             if noisy else " Every site answered with exact counts.")
    lines = [
        (f"Global model, pooled over all {g.num_examples} test images of the sites that answered (summed "
        "counts, not a mean of site figures). Always predicting the majority class scores accuracy "
        f"{_fmt(g.majority_rate)}. The AUC comes from 12 fixed bins of log-odds, where a positive and a "
        f"negative in one bin count 1/2: it is within {_fmt(g.auc_error_bound, 4)} of the exact AUC of the "
        f"same scores.{noise}"),
        "", "| model | accuracy | balanced accuracy | macro AUC |", "|---|---|---|---|",
        (f"| global (class-imbalance correction: {g.correction}) | {_fmt(g.accuracy)} | "
        f"{_fmt(g.balanced_accuracy)} | {_fmt(g.auc)} |"),
    ]
    if uncorrected is not None:
        lines.append(f"| the same without correction | {_fmt(uncorrected.accuracy)} | "
                     f"{_fmt(uncorrected.balanced_accuracy)} | {_fmt(uncorrected.auc)} |")
    if (tuning := g.tuning) is not None:
        lines += ["", (f"The logit adjustment is scaled by {tuning.scale:g}, the most accurate scale on "
                       f"{tuning.training_images} training images at {tuning.sites} sites (their summed "
                       "right predictions per scale; no test image took part)." if tuning.sites else
                       "No site sent tuning counts, so the logit adjustment keeps scale 1.")]
        if tuning.shares:
            lines.append("Share of the tuning images: " + ", ".join(f"{site} {share:.0%}"
                                                                    for site, share in tuning.shares.items()) + ".")
        lines += [f"Tuning counts of {site} left out: {why}" for site, why in tuning.rejected.items()]
    lines += ["", ("| site | test images | share of pooled test images | share of class prior | ε per answer | "
                   "accuracy | balanced accuracy | AUC | note |"), "|---|---|---|---|---|---|---|---|---|"]
    for e in per_site:
        lines.append(f"| {e.site_id} | {e.num_examples or 0} | {_share(e.test_share)} | "
                     f"{_share(e.prior_share)} | {_fmt(e.epsilon, 2) if e.epsilon else 'exact'} | "
                     f"{_fmt(e.accuracy)} | {_fmt(e.balanced_accuracy)} | {_fmt(e.auc)} | {e.problem} |")
    lines += ["", ("A site's own AUC is n/a when its test share holds one class; it still counts in the pooled AUC. "
                   "A site's counts are pooled only within the test and training images per class it signed in its "
                   "manifest; a site holding much of the pooled test set or of the prior steers the figures.")]
    return lines


def _dp_section(sites: list[SiteEntry]) -> list[str]:
    """Each site's differential-privacy guarantee, as signed into its manifest (dpdm)."""
    lines = [("Differential privacy, signed into each manifest: what it covers is that site's released set and "
              "class counts, for this one release (not other runs). A DP site keeps its privacy report at the site: "
              "its figures come from the training images, outside the guarantee.")]
    lines += [""] + [f"- {s.site_id}: DP: ε={d.epsilon:g}, δ={d.delta:g} ({d.mechanism} mechanism, "
                     f"{d.accountant}, noise multiplier {d.noise_multiplier:.3f})"
                     for s in sites if (d := s.dp)]
    return lines


def _privacy_section(sites: list[SiteEntry]) -> list[str]:
    """Each site's privacy report in numbers, as signed into its manifest (site_agent/privacy)."""
    lines = [("Privacy reports, measured by each site before release and signed into its manifest. Membership "
              "attack AUC (0.5: chance) on a model trained on the site's set, against the same attack on a random "
              "real subset of the same size; TPR at 0.1 % FPR of the strongest attack; synthetic images flagged "
              "as too close to a real one; the set's balanced accuracy on the site's held-out images."),
             "", ("| site | attack AUC [95 % CI] | LiRA AUC | real-subset AUC | TPR at 0.1 % FPR | flagged | "
                  "held-out bal. acc. | report s |"), "|---|---|---|---|---|---|---|---|"]
    for s in sites:
        if (p := s.privacy) is None:
            continue
        lines.append(f"| {s.site_id} | {_interval(p.threshold_attack)} | {_interval(p.lira)} | "
                     f"{_interval(p.reference_threshold_attack)} | {_fmt(p.strongest('tpr_at_0_1pct_fpr'))} | "
                     f"{p.nearest_real_flagged} | {_fmt(p.site_balanced_accuracy)} | {p.seconds:.0f} |")
    return lines


def _interval(attack: AttackSummary | None) -> str:
    if attack is None:
        return "n/a"
    auc = attack.auc
    return f"{auc.value:.3f} [{auc.low:.2f}, {auc.high:.2f}]"


def _yardstick_section(summary: RunSummary) -> list[str]:
    """The pooled set against a random real subset of the same size (simulation only)."""
    y, g = summary.yardstick, summary.global_model
    assert y is not None and g is not None, "only a scored simulation has a yardstick"
    u = summary.uncorrected or g
    rows = [("pooled synthetic sets, global model", g.figures()),
            ("pooled synthetic sets, without correction", u.figures()),
            (f"random real subset ({y.correction})", y.corrected),
            ("random real subset, without correction", y.uncorrected)]
    lines = [(f"Yardstick (simulation only: it ships real images, so it is **not private**): a random real subset "
             f"of {y.images} training images with the pooled set's class mix, trained and scored the same way."),
             "", "| set | accuracy | balanced accuracy | macro AUC |", "|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(r.accuracy)} | {_fmt(r.balanced_accuracy)} | {_fmt(r.auc)} |" for name, r in rows]
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
