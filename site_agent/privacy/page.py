"""The site-local files of a privacy report: the full JSON and a static HTML page for the reviewer.

Both stay at the site: they hold per-image nearest-neighbour distances to patients' images. The
page is self-contained (the synthetic grid is embedded), so it opens from disk with no server.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path

from shared.grid import image_grid
from shared.manifest import AttackSummary, Estimate, PrivacySummary
from site_agent.cache import run_file, write_atomically
from site_agent.distill import SyntheticSet
from site_agent.policy import PrivacyLimits
from site_agent.privacy.report import PrivacyReport

REPORT_JSON = "privacy-report.json"
REPORT_HTML = "privacy-report.html"


def privacy_report_folder(cache_dir: Path, run_id: str, nonce: str) -> Path:
    """``<cache-dir>/privacy-reports/<hash of run and nonce>``: one folder per request answered."""
    return run_file(cache_dir, "privacy-reports", f"{run_id}\n{nonce}", "")


def write_report(
    report: PrivacyReport,
    synthetic: SyntheticSet,
    label_names: dict[int, str],
    limits: PrivacyLimits,
    failed: list[str],
    folder: Path,
    reasons: list[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``privacy-report.json`` and ``privacy-report.html`` into ``folder``; returns their paths.

    ``reasons`` say why each failed limit failed, with the measured figure (``gate.blocking_reasons``).
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    document = {
        "summary": report.summary.model_dump(mode="json"),
        "limits": limits.model_dump(mode="json"),
        "failed_limits": failed,
        "blocked_because": reasons or [],
        "notes": report.notes,
        "flag_quantile": report.memorisation.flag_quantile,
        "nearest_real": [asdict(image) | {"label": int(label)}
                         for image, label in zip(report.memorisation.images, synthetic.labels, strict=True)],
    }
    json_path, html_path = folder / REPORT_JSON, folder / REPORT_HTML
    write_atomically(json_path, lambda p: p.write_text(json.dumps(document, indent=2) + "\n"))
    page = render_page(report, synthetic, label_names, reasons or failed)
    write_atomically(html_path, lambda p: p.write_text(page))
    return json_path, html_path


def render_page(report: PrivacyReport, synthetic: SyntheticSet, label_names: dict[int, str], failed: list[str]) -> str:
    """The reviewer's page: verdict (``failed``: the failed limits, or why each failed), attacks against the
    reference, memorisation, utility, the images."""
    s = report.summary
    verdict = (f"<p class=bad>Blocked by the site's policy: {html.escape('; '.join(failed))}</p>" if failed
               else "<p class=good>Within every limit of the site's policy (membership limits against the upper "
               "end of each 95 % interval).</p>")
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in report.notes)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>{_attack_cells(attack)}</tr>"
        for name, attack in (("threshold attack on the synthetic set", s.threshold_attack),
                             ("LiRA on the synthetic set", s.lira),
                             ("threshold attack on a random real subset (reference)", s.reference_threshold_attack),
                             ("LiRA on a random real subset (reference)", s.reference_lira))
    )
    images = "".join(
        f"<tr{' class=bad' if i.flagged else ''}><td>{n}</td><td>{int(label)}</td><td>{i.pixel_l2:.3f}</td>"
        f"<td>{i.pixel_rank:.3f}</td><td>{i.feature_l2:.3f}</td><td>{i.feature_rank:.3f}</td><td>{i.ssim:.3f}</td></tr>"
        for n, (i, label) in enumerate(zip(report.memorisation.images, synthetic.labels, strict=True))
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Privacy report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} .bad{{color:#a00}} .good{{color:#070}}</style>
</head><body>
<h1>Privacy report of a synthetic set</h1>
{verdict}
<ul>{notes}</ul>
<h2>Membership inference</h2>
<p>{s.members} members (training images), {s.non_members} non-members (held-out images), {s.shadow_models} shadow
models. Values with bootstrap 95&nbsp;% intervals. With N non-members, FPRs below 1/N read as zero false positives.</p>
<table><tr><th>attack</th><th>AUC</th><th>TPR at 1&nbsp;% FPR</th><th>TPR at 0.1&nbsp;% FPR</th></tr>{rows}</table>
<h2>Utility at the site</h2>
<p>A model trained on the synthetic set, on {s.site_test_images} held-out images: accuracy {_fraction(s.site_accuracy)},
balanced accuracy {_fraction(s.site_balanced_accuracy)}, AUC {_fraction(s.site_auc)}.</p>
<h2>Memorisation</h2>
<p>{s.nearest_real_flagged} of {len(report.memorisation.images)} images flagged (nearest real image closer than the
{report.memorisation.flag_quantile:g} quantile of real-to-real nearest distances); lowest rank
{s.nearest_real_min_rank:.3f}; highest SSIM {s.max_ssim:.3f}; {s.synthetic_duplicates} duplicate pairs.</p>
<table><tr><th>image</th><th>class</th><th>pixel L2</th><th>rank</th><th>feature L2</th><th>rank</th><th>SSIM</th></tr>
{images}</table>
<h2>The synthetic images</h2>
<img alt="synthetic images, one row per class" src="data:image/png;base64,{_grid_png(synthetic, label_names)}">
<p>Report took {s.seconds:.0f} s.</p>
</body></html>
"""


def summary_lines(summary: PrivacySummary) -> list[str]:
    """The summary in a few lines of text, for logs and ``site-agent distill``."""
    lines = []
    for name, attack in (("threshold attack", summary.threshold_attack), ("LiRA", summary.lira),
                         ("reference (real subset) threshold attack", summary.reference_threshold_attack),
                         ("reference (real subset) LiRA", summary.reference_lira)):
        if attack is not None:
            lines.append(f"{name}: AUC {_estimate(attack.auc)}, TPR@1% FPR {_estimate(attack.tpr_at_1pct_fpr)}, "
                         f"TPR@0.1% FPR {_estimate(attack.tpr_at_0_1pct_fpr)}")
    lines.append(f"memorisation: {summary.nearest_real_flagged} images flagged, lowest rank "
                 f"{summary.nearest_real_min_rank:.3f}, highest SSIM {summary.max_ssim:.3f}, "
                 f"{summary.synthetic_duplicates} duplicate pairs")
    lines.append(f"utility at the site: accuracy {_fraction(summary.site_accuracy)}, balanced accuracy "
                 f"{_fraction(summary.site_balanced_accuracy)}, AUC {_fraction(summary.site_auc)}")
    return lines


def headline(summary: PrivacySummary) -> dict[str, float | int | None]:
    """The report's headline numbers (the strongest attack, memorisation, utility), for the audit log and lists."""
    return {
        "mia_auc": summary.strongest("auc"),
        "mia_tpr_at_0_1pct_fpr": summary.strongest("tpr_at_0_1pct_fpr"),
        "nearest_real_flagged": summary.nearest_real_flagged,
        "nearest_real_min_rank": summary.nearest_real_min_rank,
        "max_ssim": summary.max_ssim,
        "site_balanced_accuracy": summary.site_balanced_accuracy,
    }


def _attack_cells(attack: AttackSummary | None) -> str:
    if attack is None:
        return "<td colspan=3>not measured</td>"
    return "".join(f"<td>{_estimate(e)}</td>" for e in (attack.auc, attack.tpr_at_1pct_fpr, attack.tpr_at_0_1pct_fpr))


def _estimate(estimate: Estimate) -> str:
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _grid_png(synthetic: SyntheticSet, label_names: dict[int, str]) -> str:
    buffer = io.BytesIO()
    image_grid(synthetic.images.numpy(), synthetic.labels.numpy(), label_names).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
