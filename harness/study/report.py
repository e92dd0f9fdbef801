"""The study's report: ``docs/study-<dataset>.md`` with its tables, two PNG plots and the raw JSON beside it.

Every figure is a mean ± standard deviation over the study's seeds (population std; one seed: the
value alone). Plots: balanced accuracy and AUC against the bytes each site moved (FedAvg's curve per
round against the pooled sets' points: the headline picture), and the random-subset/distilled
correlation of Li et al. (2024), which ``correlate`` also computes across several studies.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coordinator.plots import pyplot
from harness.study.arms import ArmRecord, dump
from harness.study.plan import StudyConfig
from harness.yardstick import FIGURES
from shared.datasets import dataset_info

MB = 1e6
REPEATED = {"seeds": "seed", "methods": "method", "ipcs": "ipc"}  # list settings: the CLI's repeated flag
NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC"}


def mean_spread(values: Iterable[float | None], digits: int = 3) -> str:
    present = [v for v in values if v is not None and not np.isnan(v)]
    if not present:
        return "n/a"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{np.mean(present):.{digits}f} ± {np.std(present):.{digits}f}"


# --- rows: one per arm (pooled arms: round 1 and round R), figures over seeds -------------------------


def rows(records: list[ArmRecord]) -> list[dict[str, Any]]:
    """Table rows in reading order: ceiling, local, FedAvg, then per method and ipc the pooled rounds and subset."""
    groups: dict[tuple, list[ArmRecord]] = defaultdict(list)
    for r in records:
        groups[r.kind, r.method, r.ipc].append(r)
    out = []
    for kind, label in (("central", "centralised: every training image in one place (ceiling)"),
                        ("local", "local only: each site alone, on its own test share"),
                        ("fedavg", "FedAvg (Flower's strategy), to its plateau")):
        if (kind, None, None) in groups:
            group = groups[kind, None, None]
            out.append(_row(label, group, [g.figures for g in group], [g.bytes_per_site for g in group]))
    pooled_keys = sorted(k for k in groups if k[0] == "pooled")
    for _, method, ipc in pooled_keys:
        group = groups["pooled", method, ipc]
        last = min(len(g.curve) for g in group)
        for index in sorted({0, last - 1}):
            label = f"pooled {method} sets, ipc {ipc}, round {group[0].curve[index]['round']}"
            out.append(_row(label, group, [g.curve[index] for g in group], [g.curve[index]["bytes_per_site"] for g in group]))
        subset = groups.get(("subset", method, ipc), [])
        if subset:
            out.append(_row(f"random real subset of that size ({subset[0].images} images; NOT private)", subset,
                            [s.figures for s in subset], [s.bytes_per_site for s in subset]))
    return out


def _row(label: str, group: list[ArmRecord], values: list[dict[str, Any]], bytes_: list[float]) -> dict[str, Any]:
    return {"label": label, "private": group[0].private, "seeds": sorted(g.seed for g in group),
            **{k: [v.get(k) for v in values] for k in FIGURES}, "bytes": bytes_,
            "wall": [g.seconds.get("wall") for g in group if g.seconds.get("wall") is not None]}


# --- plots ------------------------------------------------------------------------------------------------


def plot_bytes(records: list[ArmRecord], path: Path) -> None:
    """Balanced accuracy and AUC against MB per site: FedAvg per round, pooled sets per round, references."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    for axis, metric in zip(axes, ("balanced_accuracy", "auc"), strict=True):
        fedavg = [r for r in records if r.kind == "fedavg"]
        for i, r in enumerate(fedavg):
            axis.plot([c["bytes_per_site"] / MB for c in r.curve], [_nan(c[metric]) for c in r.curve], color="tab:blue",
                      alpha=0.6, lw=1, label="FedAvg, per round (one line per seed)" if i == 0 else None)
        pooled: dict[tuple, list[ArmRecord]] = defaultdict(list)
        for r in records:
            if r.kind == "pooled":
                pooled[r.method, r.ipc].append(r)
        colours = iter(["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                        "tab:cyan"] * 4)
        for (method, ipc), group in sorted(pooled.items()):
            n = min(len(g.curve) for g in group)
            x = [np.mean([g.curve[k]["bytes_per_site"] for g in group]) / MB for k in range(n)]
            y = [np.nanmean([_nan(g.curve[k][metric]) for g in group]) for k in range(n)]
            axis.plot(x, y, marker="o", color=next(colours), label=f"pooled {method}, ipc {ipc} (rounds 1-{n})")
        for kind, marker, label in (("subset", "s", "random real subset (ships real images)"),
                                    ("central", "*", "centralised (ships every image)")):
            chosen = [r for r in records if r.kind == kind]
            if chosen:
                axis.scatter([r.bytes_per_site / MB for r in chosen], [_nan(r.figures[metric]) for r in chosen],
                             marker=marker, facecolors="none", edgecolors="grey", s=60, label=label)
        local = [_nan(r.figures[metric]) for r in records if r.kind == "local"]
        if local:
            axis.axhline(np.nanmean(local), color="black", ls="--", lw=1, label="local only (nothing moves)")
        axis.set_xscale("log")
        axis.set_xlabel("MB per site, received + sent (log scale)")
        axis.set_ylabel(f"{NAMES[metric]}, pooled over all test images")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def correlation_points(records: list[ArmRecord], dataset: str, metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per (method, ipc): mean over seeds of the subset's and the round-1 pooled set's ``metric``."""
    pairs: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    subsets = {(r.method, r.ipc, r.seed): r for r in records if r.kind == "subset"}
    for r in records:
        subset = subsets.get((r.method, r.ipc, r.seed))
        if r.kind == "pooled" and subset is not None:
            pairs[r.method, r.ipc].append((_nan(subset.figures[metric]), _nan(r.curve[0][metric])))
    return [{"dataset": dataset, "method": m, "ipc": ipc, "subset": float(np.nanmean([p[0] for p in v])),
             "distilled": float(np.nanmean([p[1] for p in v]))} for (m, ipc), v in sorted(pairs.items())]


def pearson(points: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Pearson's r between subset and distilled figures, its two-sided p-value, and the number of points."""
    from scipy.stats import pearsonr

    xs = [p["subset"] for p in points]
    ys = [p["distilled"] for p in points]
    if len(points) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return float("nan"), float("nan"), len(points)
    result = pearsonr(xs, ys)
    return float(result.statistic), float(result.pvalue), len(points)


def plot_correlation(points: list[dict[str, Any]], path: Path, metric: str = "accuracy") -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 4.5), constrained_layout=True)
    for dataset in sorted({p["dataset"] for p in points}):
        mine = [p for p in points if p["dataset"] == dataset]
        axis.scatter([p["subset"] for p in mine], [p["distilled"] for p in mine], label=dataset)
        for p in mine:
            axis.annotate(f"{p['method']} {p['ipc']}", (p["subset"], p["distilled"]), fontsize=7)
    r, pvalue, n = pearson(points)
    if not np.isnan(r):
        slope, intercept = np.polyfit([p["subset"] for p in points], [p["distilled"] for p in points], 1)
        xs = np.linspace(min(p["subset"] for p in points), max(p["subset"] for p in points), 10)
        axis.plot(xs, slope * xs + intercept, color="grey", lw=1)
    axis.set_title(f"Pearson r = {r:.2f} (p = {pvalue:.2g}, n = {n})", fontsize=10)
    axis.set_xlabel(f"random real subset {NAMES[metric]}")
    axis.set_ylabel(f"pooled distilled sets {NAMES[metric]} (round 1)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


# --- the markdown -----------------------------------------------------------------------------------------


def command_line(config: StudyConfig) -> str:
    """The ``coordinator study`` command that reproduces the study (settings that differ from the defaults)."""
    defaults = StudyConfig().model_dump(mode="json")
    parts = ["coordinator study"]
    for key, value in config.model_dump(mode="json").items():
        if key != "dataset" and value == defaults[key]:
            continue
        if isinstance(value, list):  # --seed 0 --seed 1: one flag per item
            parts += [f"--{REPEATED[key]} {item}" for item in value]
        else:
            parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def write_report(config: StudyConfig, records: list[ArmRecord], docs: Path) -> Path:
    """``docs/study-<dataset>.md``, its two PNGs and ``docs/study-<dataset>.json``; returns the markdown's path."""
    docs.mkdir(parents=True, exist_ok=True)
    stem = f"study-{config.dataset}"
    (docs / f"{stem}.json").write_text(json.dumps({"config": config.model_dump(mode="json"),
                                                   "records": dump(records)}, indent=1) + "\n")
    plot_bytes(records, docs / f"{stem}-bytes.png")
    points = correlation_points(records, config.dataset)
    plot_correlation(points, docs / f"{stem}-correlation.png")
    (docs / f"{stem}.md").write_text(render(config, records, points, stem))
    return docs / f"{stem}.md"


def render(config: StudyConfig, records: list[ArmRecord], points: list[dict[str, Any]], stem: str) -> str:
    wall = sum(r.seconds.get("wall", 0.0) for r in records)
    now, full = config.model_dump(mode="json"), StudyConfig().model_dump(mode="json")
    narrowed = [f"{k.replace('_', ' ')} {now[k]} (full design: {full[k]})"
                for k in now if k not in ("dataset", "data_root", "out_dir", "device") and now[k] != full[k]]
    lines = [
        f"# Study: {config.dataset}, {config.sites} sites, {config.partition.value} partition (alpha {config.alpha})",
        "",
        "Does pooling distilled sets pay? Every arm below ran on the same partition for each seed (checked: the",
        "share digests of every arm agree, see the end). Figures are pooled metrics over every site's test",
        "share (together the whole test split); mean ± std over seeds. The global models on pooled sets and",
        "subsets are corrected for the sites' real class mix (logit adjustment); FedAvg, local and centralised",
        "models train on real data and need no correction.",
        "",
        "```bash",
        command_line(config),
        "```",
        "",
        (f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} CPU cores ({platform.machine()}), torch "
         f"{torch.__version__}, device {config.device}{', a GPU' if torch.cuda.is_available() else ', no GPU'}; "
         f"{wall / 60:.0f} minutes of arm wall time in all."),
        "",
        "**Budget.** " + ("; ".join(narrowed) + "." if narrowed else "The full design.")
        + " Each method runs its CPU preset (shared/presets.py) unless `--iterations` says otherwise.",
        "",
        "| arm | private | seeds | accuracy | balanced accuracy | AUC | MB per site | arm wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows(records):
        cells = " | ".join(mean_spread(row[k]) for k in FIGURES)
        lines.append(f"| {row['label']} | {'yes' if row['private'] else '**no**'} | "
                     f"{','.join(map(str, row['seeds']))} | {cells} | {mean_spread([b / MB for b in row['bytes']])} | "
                     f"{mean_spread(row['wall'], 0)} |")
    majority = [r.majority_rate for r in records if r.kind == "central" and r.majority_rate is not None]
    if majority:
        lines.append(f"| always the majority class | | | {mean_spread(majority)} | {1 / dataset_info(config.dataset).num_classes:.3f} | 0.500 | 0 | |")
    lines += ["", f"![balanced accuracy and AUC against MB per site]({stem}-bytes.png)", ""]
    lines += _fedavg_section(records) + _cross_arch_section(records) + _local_section(records)
    r, pvalue, n = pearson(points)
    lines += [
        "## Random subset against distilled sets (Li et al., 2024)", "",
        "Per method and ipc: the round-1 pooled sets' accuracy against the accuracy of a random real subset of the",
        f"same size (means over seeds). Pearson r = {r:.2f}, p = {pvalue:.2g}, over n = {n} points"
        + (" (too few points for a coefficient)" if np.isnan(r) else "") + ".", "",
        "| method | ipc | subset accuracy | distilled accuracy |", "|---|---|---|---|",
        *[f"| {p['method']} | {p['ipc']} | {p['subset']:.3f} | {p['distilled']:.3f} |" for p in points],
        "", f"![subset against distilled accuracy]({stem}-correlation.png)", "",
    ]
    lines += _seconds_section(records) + _shares_section(records)
    return "\n".join(lines) + "\n"


def _fedavg_section(records: list[ArmRecord]) -> list[str]:
    fedavg = [r for r in records if r.kind == "fedavg"]
    if not fedavg:
        return []
    lines = ["## FedAvg per seed", "", "| seed | rounds | final balanced accuracy | final AUC | MB per site | model MB per message |",
             "|---|---|---|---|---|---|"]
    for r in sorted(fedavg, key=lambda r: r.seed):
        lines.append(f"| {r.seed} | {len(r.curve)} | {mean_spread([r.figures['balanced_accuracy']])} | "
                     f"{mean_spread([r.figures['auc']])} | {r.bytes_per_site / MB:.2f} | "
                     f"{r.curve[-1]['model_bytes_sent'] / MB:.3f} |")
    return lines + [""]


def _cross_arch_section(records: list[ArmRecord]) -> list[str]:
    chosen = [r for r in records if r.resnet18 is not None]
    if not chosen:
        return []
    lines = ["## Cross-architecture: the same training set in a ConvNet-3 and a ResNet-18", "",
             "Uncorrected figures (no class-prior adjustment) on the whole test split.", "",
             "| set | seeds | ConvNet balanced accuracy | ConvNet AUC | ResNet-18 balanced accuracy | ResNet-18 AUC |",
             "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[ArmRecord]] = defaultdict(list)
    for r in chosen:
        groups[r.method, r.ipc, r.kind].append(r)
    for (method, ipc, kind), group in sorted(groups.items()):
        label = f"{'pooled' if kind == 'pooled' else 'random real subset'} {method}, ipc {ipc}"
        convnet = [g.uncorrected or g.figures for g in group]
        lines.append(f"| {label} | {','.join(str(g.seed) for g in group)} | "
                     f"{mean_spread([c['balanced_accuracy'] for c in convnet])} | {mean_spread([c['auc'] for c in convnet])} | "
                     f"{mean_spread([g.resnet18['balanced_accuracy'] for g in group])} | "
                     f"{mean_spread([g.resnet18['auc'] for g in group])} |")
    return lines + [""]


def _local_section(records: list[ArmRecord]) -> list[str]:
    local = [r for r in records if r.kind == "local"]
    if not local:
        return []
    lines = ["## Local only, per site (what a hospital gets without the federation)", "",
             "| site | train images | test images | balanced accuracy | AUC |", "|---|---|---|---|---|"]
    sites = sorted({s["site"] for r in local for s in r.per_site})
    for site in sites:
        entries = [s for r in local for s in r.per_site if s["site"] == site]
        lines.append(f"| {site} | {mean_spread([e['train_images'] for e in entries], 0)} | "
                     f"{mean_spread([e['test_images'] for e in entries], 0)} | "
                     f"{mean_spread([e['balanced_accuracy'] for e in entries])} | {mean_spread([e['auc'] for e in entries])} |")
    return lines + ["", "A site whose test share lacks a class has no AUC of its own (n/a); the pooled row above still",
                    "counts its images.", ""]


def _seconds_section(records: list[ArmRecord]) -> list[str]:
    stages: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        name = r.kind if r.kind != "pooled" else f"pooled {r.method}, ipc {r.ipc}"
        for stage, seconds in r.seconds.items():
            if stage != "rounds":
                stages[name, stage].append(seconds)
    lines = ["## Wall time per stage (seconds)", "", "| arm | stage | seconds |", "|---|---|---|"]
    lines += [f"| {arm} | {stage} | {mean_spread(v, 1)} |" for (arm, stage), v in sorted(stages.items())]
    note = ("A pooled arm's stages are its last round's (receive, train, evaluate); its wall time covers every "
            "round and the subset and ResNet-18 scoring beside it.")
    return [*lines, "", note, ""]


def _shares_section(records: list[ArmRecord]) -> list[str]:
    lines = ["## Partition check", "", "| seed | site | share digest (SHA-256 of its train and test index sets) | arms |",
             "|---|---|---|---|"]
    for seed in sorted({r.seed for r in records}):
        mine = [r for r in records if r.seed == seed]
        for site, digest in sorted(mine[0].shares.items()):
            lines.append(f"| {seed} | {site} | `{digest[:16]}…` | {sum(r.shares.get(site) == digest for r in mine)} of {len(mine)} |")
    return lines + [""]


def correlate(study_files: list[Path], docs: Path) -> Path:
    """``docs/study-correlation.md`` and its plot, over every study JSON given (datasets and ipcs)."""
    points = []
    for path in study_files:
        stored = json.loads(path.read_text())
        records = [ArmRecord.model_validate(r) for r in stored["records"]]
        points += correlation_points(records, stored["config"]["dataset"])
    docs.mkdir(parents=True, exist_ok=True)
    plot_correlation(points, docs / "study-correlation.png")
    r, pvalue, n = pearson(points)
    lines = ["# Random subset against distilled sets, across studies (Li et al., 2024)", "",
             "```bash", "coordinator study-correlation " + " ".join(str(p) for p in study_files), "```", "",
             f"Pearson r = {r:.2f}, p = {pvalue:.2g}, n = {n} (dataset, method, ipc) points; round-1 pooled sets.", "",
             "| dataset | method | ipc | subset accuracy | distilled accuracy |", "|---|---|---|---|---|",
             *[f"| {p['dataset']} | {p['method']} | {p['ipc']} | {p['subset']:.3f} | {p['distilled']:.3f} |" for p in points],
             "", "![subset against distilled accuracy](study-correlation.png)", ""]
    (docs / "study-correlation.md").write_text("\n".join(lines))
    return docs / "study-correlation.md"
