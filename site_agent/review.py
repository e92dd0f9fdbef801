"""The reviewer's page of a held release: one static, self-contained ``review.html`` in its approvals folder.

It shows what the coordinator would receive (the synthetic images, embedded as a PNG, and the signed
manifest), the privacy report's summary and failed limits, and the request that asked for it. It opens
from disk with no server and stays at the site, like the release folder it describes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from shared.manifest import PrivacySummary
from site_agent.approval import BUNDLE_NAME, HeldRelease
from site_agent.preview import site_local_files
from site_agent.privacy.page import REPORT_JSON, headline, summary_lines

REVIEW_HTML = "review.html"


def site_privacy(held: HeldRelease) -> PrivacySummary | None:
    """The release's privacy report in numbers: signed into its manifest, or (a DP release, whose manifest
    leaves it out) from the site's own copy of the report in the release's folder."""
    if held.manifest and held.manifest.privacy:
        return held.manifest.privacy
    report = held.folder / REPORT_JSON
    return PrivacySummary.model_validate(json.loads(report.read_text())["summary"]) if report.is_file() else None


def privacy_headline(held: HeldRelease) -> str:
    """The privacy report in one short phrase, for the list of releases."""
    privacy = site_privacy(held)
    if privacy is None:
        return "no privacy report"
    numbers = headline(privacy)
    auc = numbers["mia_auc"]
    accuracy = numbers["site_balanced_accuracy"]
    return (f"MIA AUC {'n/a' if auc is None else f'{auc:.2f}'}, {numbers['nearest_real_flagged']} flagged, "
            f"balanced acc. {'n/a' if accuracy is None else f'{accuracy:.2f}'}")


def write_review_page(held: HeldRelease) -> Path:
    """Write ``review.html`` into the release's folder; returns its path."""
    path = held.folder / REVIEW_HTML
    path.write_text(render_review_page(held))
    return path


def render_review_page(held: HeldRelease) -> str:
    """The page: status, images, privacy summary, manifest, request."""
    manifest, request = held.manifest, held.request
    preview = site_local_files(held.folder / BUNDLE_NAME).preview
    image = (f'<img alt="synthetic images, one row per class" src="data:image/png;base64,'
             f'{base64.b64encode(preview.read_bytes()).decode()}">' if preview.is_file() else "<p>no preview image</p>")
    report_path = held.folder / REPORT_JSON
    failed = json.loads(report_path.read_text()).get("failed_limits", []) if report_path.is_file() else []
    privacy = site_privacy(held)
    lines = summary_lines(privacy) if privacy else ["no privacy report was measured for this release"]
    verdict = (f"<p class=bad>Failed limits: {html.escape(', '.join(failed))}</p>" if failed
               else "<p>No limit of the site's policy failed.</p>" if privacy else "")
    decision = held.decision
    decided = (f" by {html.escape(decision.by)} at {html.escape(decision.at)}"
               f"{': ' + html.escape(decision.reason) if decision.reason else ''}" if decision else "")
    facts = (f"run {html.escape(manifest.run_id)}, {html.escape(manifest.dataset)}, method "
             f"{html.escape(manifest.distill.method.value)}, {manifest.distill.ipc} images per class, "
             f"{manifest.payload.count} images, from {manifest.num_real_examples} local training images"
             if manifest else "the manifest is missing")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Review release {html.escape(held.id)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} pre{{background:#f4f4f4;padding:1em;
overflow:auto}} .bad{{color:#a00}}</style>
</head><body>
<h1>Release {html.escape(held.id)}: {held.status.value}{decided}</h1>
<p>{facts}.</p>
<p>Approve: <code>site-agent approve {html.escape(held.id)} --by NAME</code>; reject:
<code>site-agent reject {html.escape(held.id)} --reason TEXT --by NAME</code>.</p>
<h2>The synthetic images (what the coordinator would receive, encrypted)</h2>
{image}
<h2>Privacy report</h2>
{verdict}
<ul>{"".join(f"<li>{html.escape(line)}</li>" for line in lines)}</ul>
<p>Full report (site-local): {html.escape(REPORT_JSON) if report_path.is_file() else "not measured"} in this
folder, and the privacy report page in the site's cache.</p>
<h2>Signed manifest</h2>
<pre>{html.escape(manifest.model_dump_json(indent=2), quote=False) if manifest else "missing"}</pre>
<h2>The request</h2>
<pre>{html.escape(request.model_dump_json(indent=2), quote=False) if request else "missing"}</pre>
</body></html>
"""
