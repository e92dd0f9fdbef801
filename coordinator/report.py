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

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coordinator.evaluate import EvalReport
from coordinator.plots import plot_class_coverage, plot_rounds
from coordinator.pool import PooledSet
from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report_html import render_html
from shared.config import RunConfig
from shared.datasets import DatasetInfo
from shared.grid import image_grid, titled_stack
from shared.manifest import PrivacySummary
from shared.software import software_versions


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(json.dumps(config.to_flower(), indent=2) + "\n")


def build_summary(
    config: RunConfig,
    run_id: str,
    outcomes: list[SiteOutcome],
    pooled: PooledSet | None,
    info: DatasetInfo,
    evaluations: Mapping[str, EvalReport] | None,
    stage_seconds: dict[str, float],
    status: str,
    error: str = "",
    correction: str = "none",
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a reader of the run needs, as plain JSON-able values (NaN written as null), with the time it was
    written and the software that wrote it.

    ``evaluations["global"]`` is the global model's evaluation; ``evaluations["uncorrected"]``, when
    present, the same model without the class-imbalance ``correction``; ``tuning``, how that correction
    was tuned on the sites' training images (``coordinator.server_app.tune_at_sites``).
    """
    summary: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "error": error,
        "dataset": config.dataset,
        "method": config.method.value,
        "ipc": config.ipc,
        "iterations": config.distill_config().iterations,  # the preset's when the config says 0
        "sites_expected": config.sites,
        "sites_accepted": sum(o.status == OutcomeStatus.ACCEPTED for o in outcomes),
        "sites_by_status": {status.value: n for status in OutcomeStatus
                            if (n := sum(o.status == status for o in outcomes))},
        "sites": [_site_entry(o) for o in sorted(outcomes, key=lambda o: (o.site_id or "~", o.node_id or -1))],
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "software": software_versions(),
    }
    if pooled is not None:
        summary["pooled"] = {
            "images": len(pooled.labels),
            "images_per_site": pooled.images_per_site,
            "class_counts": dict(zip(info.label_names.values(), pooled.class_counts(info.num_classes), strict=True)),
        }
    if evaluations is not None:
        evaluation = evaluations["global"]
        summary["global"] = {**asdict(evaluation.pooled), "confusion": evaluation.confusion,
                             "class_names": list(info.label_names.values()), "correction": correction}
        if tuning is not None:
            summary["global"]["tuning"] = dict(tuning)
        if "uncorrected" in evaluations:
            summary["uncorrected"] = asdict(evaluations["uncorrected"].pooled)
        prior = pooled.prior_shares() if pooled is not None else {}
        summary["per_site"] = [
            {"site_id": e.site_id, "node_id": e.node_id, "problem": e.problem, "epsilon": e.epsilon,
             "test_share": evaluation.shares.get(e.site_id), "prior_share": prior.get(e.site_id),
             **(asdict(m) if m else {})}
            for e, m in evaluation.sites
        ]
    return _nan_to_none(summary)


def write_results(run_dir: Path, summary: dict[str, Any], pooled: PooledSet | None, info: DatasetInfo) -> None:
    """The pictures (when there is a pooled set: the grid; once a round is scored: rounds.png), then summary.json
    and both reports, which show them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if pooled is not None:
        synthetic_grid(pooled, info).save(run_dir / "synthetic_grid.png")
    if summary.get("rounds"):
        plot_rounds(summary["rounds"], run_dir / "rounds.png")
    plot_class_coverage(summary["sites"], list(info.label_names.values()), run_dir / "class_coverage.png")
    write_summary(run_dir, summary)


ATTEMPTS = "attempts"
_ATTEMPT_FILES = ("summary.json", "report.md", "report.html", "rounds.png", "class_coverage.png",
                  "synthetic_grid.png")


def keep_earlier_attempt(run_dir: Path) -> Path | None:
    """Before a resumed run writes its results, move the stopped attempt's into ``attempts/<n>/``; returns it."""
    if not (run_dir / "summary.json").is_file():
        return None
    folder = run_dir / ATTEMPTS / str(len(list((run_dir / ATTEMPTS).glob("*"))) + 1)
    folder.mkdir(parents=True)
    for name in _ATTEMPT_FILES:
        if (run_dir / name).is_file():
            (run_dir / name).rename(folder / name)
    return folder


def _earlier_attempts(run_dir: Path) -> list[dict[str, Any]]:
    attempts = []
    for folder in sorted((run_dir / ATTEMPTS).glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        try:
            earlier = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        attempts.append({"folder": f"{ATTEMPTS}/{folder.name}", "status": earlier.get("status"),
                         "sites_accepted": earlier.get("sites_accepted"), "error": earlier.get("error")})
    return attempts


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, report.md and report.html (NaN written as null), listing the earlier attempts of a resumed run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = _nan_to_none({**summary, "earlier_attempts": _earlier_attempts(run_dir)})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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


def render_report(summary: dict[str, Any]) -> str:
    """A short Markdown report of the run."""
    lines = [
        f"# Run {summary['run_id']}: {summary['status']}",
        "",
        (
            f"{summary['dataset']}, method {summary['method']}, ipc {summary['ipc']}, {summary['iterations']} "
            f"iterations; {summary['sites_accepted']} of {summary['sites_expected']} sites accepted."
        ),
    ]
    if summary.get("error"):
        lines += ["", f"**Stopped:** {summary['error']}"]
    if "global" in summary:
        lines += ["", *headline(summary["global"], summary.get("uncorrected"))]
    for attempt in summary.get("earlier_attempts", []):
        lines += ["", f"Resumed: an earlier attempt ({attempt['folder']}/report.md) ended {attempt['status']} with "
                      f"{attempt['sites_accepted']} sites accepted" + (f": {attempt['error']}" if attempt["error"] else "")]
    by_status = summary.get("sites_by_status", {})
    held, declined = by_status.get(OutcomeStatus.AWAITING_APPROVAL, 0), by_status.get(OutcomeStatus.REJECTED_AT_SITE, 0)
    if held or declined:
        lines += ["", (f"Site review: {held} sites' releases await their operators' approval, {declined} were rejected "
                      "by the site's own reviewer (nothing was sent by them).")]
    lines += ["", "| site | node | status | reason | bundle bytes | distill s |", "|---|---|---|---|---|---|"]
    for s in summary["sites"]:
        lines.append(
            f"| {s['site_id'] or '?'} | {s['node_id'] if s['node_id'] is not None else '-'} | {s['status']} | {s['reason'] or ''} | "
            f"{s['bundle_bytes']} | {_fmt(s.get('distill_seconds'))} |"
        )
    if any(s.get("dp") for s in summary["sites"]):
        lines += ["", *_dp_section(summary["sites"])]
    if any(s.get("privacy") for s in summary["sites"]):
        lines += ["", *_privacy_section(summary["sites"])]
    if "global" in summary:
        lines += ["", *_global_section(summary["global"], summary.get("uncorrected"), summary["per_site"])]
    if "yardstick" in summary:
        lines += ["", *_yardstick_section(summary)]
    if len(summary.get("rounds", [])) > 1:
        lines += ["", "| round | sites delivered | accuracy | balanced accuracy | macro AUC | MB moved (cumulative) |",
                  "|---|---|---|---|---|---|"]
        for r in summary["rounds"]:
            g = r["global"]
            lines.append(f"| {r['round']} | {r['sites_accepted']} | {_fmt(g['accuracy'])} | "
                         f"{_fmt(g['balanced_accuracy'])} | {_fmt(g['auc'])} | {r['bytes']['cumulative'] / 1e6:.2f} |")
        lines += ["", "![metrics per round](rounds.png)"]
    lines += ["", "Stage seconds: " + ", ".join(f"{k} {v}" for k, v in summary["stage_seconds"].items()), ""]
    return "\n".join(lines)


MIN_CLASS_TEST_IMAGES = 20  # a class with fewer test images has too noisy a recall to warn about
LOW_RECALL = 0.2


def neglected_classes(g: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(class, test images, recall) of each class with enough test images that the model rarely predicts."""
    return [(name, count, recall) for name, count, recall in zip(g["class_names"], g["class_counts"], g["recall"],
                                                                  strict=True)
            if count >= MIN_CLASS_TEST_IMAGES and recall is not None and recall < LOW_RECALL]


def headline(g: dict[str, Any], uncorrected: dict[str, Any] | None) -> list[str]:
    """What a clinician should read first: balanced accuracy, macro AUC and every class's recall with its test
    count; accuracy only beside the majority rate; and, in words, any class the model rarely finds."""
    warnings = [f"**{name}: the global model finds {_fmt(recall)} of its {count} test images.** Its accuracy hides "
                "this; do not use the model for this class." for name, count, recall in neglected_classes(g)]
    lines = [*warnings, *([""] if warnings else []), (
        f"Balanced accuracy **{_fmt(g['balanced_accuracy'])}**, macro AUC **{_fmt(g['auc'])}** over "
        f"{g['num_examples']} test images at the sites (accuracy {_fmt(g['accuracy'])}; always predicting the "
        f"majority class: {_fmt(g['majority_rate'])}).")]
    corrected = uncorrected is not None and g.get("correction") not in (None, "none")
    if corrected:
        lines += ["", (f"The model is corrected for the sites' class mix ({g['correction']}), which favours accuracy: "
                       "each class's recall is shown beside the uncorrected model's (balanced accuracy "
                       f"{_fmt(uncorrected['balanced_accuracy'])}), so what the correction costs each class is plain.")]
    columns = [g["class_names"], g["class_counts"], g["recall"], *([uncorrected["recall"]] if corrected else [])]
    lines += ["", "| class | test images | recall |" + (" recall without correction |" if corrected else ""),
              "|---|---|---|" + ("---|" if corrected else "")]
    for name, count, *recalls in zip(*columns, strict=True):
        lines.append(f"| {name} | {count} | " + " | ".join(_fmt(r) for r in recalls) + " |")
    return lines


def _global_section(g: dict[str, Any], uncorrected: dict[str, Any] | None, per_site: list[dict[str, Any]]) -> list[str]:
    """Pooled metrics of the global model over every site's test share, per class, then per site."""
    noisy = sorted({e["epsilon"] for e in per_site if e.get("epsilon") is not None})
    noise = (f" Sites answered with noise (ε {', '.join(f'{x:g}' for x in noisy)} per answer), which moves every "
             "figure further: at ε 1 the dev sets' pooled figures moved by 0.01 to 0.07 (docs/benchmarks.md)."
             if noisy else " Every site answered with exact counts.")
    lines = [
        (f"Global model, pooled over all {g['num_examples']} test images of the sites that answered (summed "
        "counts, not a mean of site figures). Always predicting the majority class scores accuracy "
        f"{_fmt(g['majority_rate'])}. The AUC comes from 12 fixed bins of log-odds, where a positive and a "
        f"negative in one bin count 1/2: it is within {_fmt(g['auc_error_bound'], 4)} of the exact AUC of the "
        f"same scores.{noise}"),
        "", "| model | accuracy | balanced accuracy | macro AUC |", "|---|---|---|---|",
        (f"| global (class-imbalance correction: {g['correction']}) | {_fmt(g['accuracy'])} | "
        f"{_fmt(g['balanced_accuracy'])} | {_fmt(g['auc'])} |"),
    ]
    if uncorrected is not None:
        lines.append(f"| the same without correction | {_fmt(uncorrected['accuracy'])} | "
                     f"{_fmt(uncorrected['balanced_accuracy'])} | {_fmt(uncorrected['auc'])} |")
    if (tuning := g.get("tuning")) is not None:
        lines += ["", (f"The logit adjustment is scaled by {tuning['scale']:g}, the most accurate scale on "
                       f"{tuning['training_images']} training images at {tuning['sites']} sites (their summed "
                       "right predictions per scale; no test image took part)." if tuning["sites"] else
                       "No site sent tuning counts, so the logit adjustment keeps scale 1.")]
        if tuning.get("shares"):
            lines.append("Share of the tuning images: " + ", ".join(f"{site} {share:.0%}"
                                                                    for site, share in tuning["shares"].items()) + ".")
        lines += [f"Tuning counts of {site} left out: {why}" for site, why in tuning.get("rejected", {}).items()]
    lines += ["", ("| site | test images | share of pooled test images | share of class prior | ε per answer | "
                   "accuracy | balanced accuracy | AUC | note |"), "|---|---|---|---|---|---|---|---|---|"]
    for e in per_site:
        lines.append(f"| {e['site_id']} | {e.get('num_examples', 0)} | {_share(e.get('test_share'))} | "
                     f"{_share(e.get('prior_share'))} | {_fmt(e.get('epsilon'), 2) if e.get('epsilon') else 'exact'} | "
                     f"{_fmt(e.get('accuracy'))} | {_fmt(e.get('balanced_accuracy'))} | {_fmt(e.get('auc'))} | "
                     f"{e['problem']} |")
    lines += ["", ("A site's own AUC is n/a when its test share holds one class; it still counts in the pooled AUC. "
                   "A site's counts are pooled only within the test and training images per class it signed in its "
                   "manifest; a site holding much of the pooled test set or of the prior steers the figures.")]
    return lines


def _dp_section(sites: list[dict[str, Any]]) -> list[str]:
    """Each site's differential-privacy guarantee, as signed into its manifest (dpdm)."""
    lines = [("Differential privacy, signed into each manifest: what it covers is that site's released set and "
              "class counts, for this one release (not other runs). A DP site keeps its privacy report at the site: "
              "its figures come from the training images, outside the guarantee.")]
    lines += [""] + [f"- {s['site_id']}: DP: ε={d['epsilon']:g}, δ={d['delta']:g} ({d['mechanism']} mechanism, "
                     f"{d['accountant']}, noise multiplier {d['noise_multiplier']:.3f})"
                     for s in sites if (d := s.get("dp"))]
    return lines


def _privacy_section(sites: list[dict[str, Any]]) -> list[str]:
    """Each site's privacy report in numbers, as signed into its manifest (site_agent/privacy)."""
    lines = [("Privacy reports, measured by each site before release and signed into its manifest. Membership "
              "attack AUC (0.5: chance) on a model trained on the site's set, against the same attack on a random "
              "real subset of the same size; TPR at 0.1 % FPR of the strongest attack; synthetic images flagged "
              "as too close to a real one; the set's balanced accuracy on the site's held-out images."),
             "", ("| site | attack AUC [95 % CI] | LiRA AUC | real-subset AUC | TPR at 0.1 % FPR | flagged | "
                  "held-out bal. acc. | report s |"), "|---|---|---|---|---|---|---|---|"]
    for s in sites:
        p = s.get("privacy")
        if not p:
            continue
        tpr = PrivacySummary.model_validate(p).strongest("tpr_at_0_1pct_fpr")
        lines.append(f"| {s['site_id']} | {_interval(p['threshold_attack'])} | {_interval(p['lira'])} | "
                     f"{_interval(p['reference_threshold_attack'])} | {_fmt(tpr)} | {p['nearest_real_flagged']} | "
                     f"{_fmt(p['site_balanced_accuracy'])} | {p['seconds']:.0f} |")
    return lines


def _interval(attack: dict[str, Any] | None) -> str:
    if not attack:
        return "n/a"
    auc = attack["auc"]
    return f"{auc['value']:.3f} [{auc['low']:.2f}, {auc['high']:.2f}]"


def _yardstick_section(summary: dict[str, Any]) -> list[str]:
    """The pooled set against a random real subset of the same size (simulation only)."""
    y, g, u = summary["yardstick"], summary["global"], summary.get("uncorrected", summary["global"])
    rows = [("pooled synthetic sets, global model", g), ("pooled synthetic sets, without correction", u),
            (f"random real subset ({y['correction']})", y["corrected"]),
            ("random real subset, without correction", y["uncorrected"])]
    lines = [(f"Yardstick (simulation only: it ships real images, so it is **not private**): a random real subset "
             f"of {y['images']} training images with the pooled set's class mix, trained and scored the same way."),
             "", "| set | accuracy | balanced accuracy | macro AUC |", "|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(r['accuracy'])} | {_fmt(r['balanced_accuracy'])} | {_fmt(r['auc'])} |" for name, r in rows]
    return lines


def _site_entry(outcome: SiteOutcome) -> dict[str, Any]:
    metrics = outcome.metrics or {}
    return {
        "site_id": outcome.site_id,
        "node_id": outcome.node_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "bundle_bytes": outcome.bundle_bytes,
        "distill_seconds": metrics.get("distill-seconds"),
        "synthetic_images": metrics.get("synthetic-images"),
        "real_train_images": metrics.get("num-examples"),
        "privacy_seconds": metrics.get("privacy-seconds"),
        "privacy": outcome.privacy.model_dump(mode="json") if outcome.privacy else None,
        "dp": outcome.dp.model_dump(mode="json") if outcome.dp else None,
        "class_counts": outcome.class_counts,
        "real_class_counts": outcome.real_class_counts,
    }


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value
