"""report.html: the run's report as one page that opens offline, with nothing fetched from anywhere.

The page is report.md rendered (markdown-it, raw HTML off, so text a site sent stays text), then the
pooled confusion matrix, the run's plots and its synthetic grid inlined as data: URIs, and the settings
and software that produced it. A Content-Security-Policy forbids every fetch but inline images and
styles, so even a link that slipped through could not make a viewer reach the network.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from coordinator.summary import GlobalEvaluation, RunSummary

# Shown after the report's own text, each when the run wrote it.
PICTURES = (
    ("rounds.png", "Balanced accuracy and AUC of the global model per round, against the bytes moved"),
    ("class_coverage.png", "Per class, what each accepted site holds"),
    ("synthetic_grid.png", "The pooled synthetic sets, grouped by site, one row per class"),
)
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1.5em 0; overflow-x: auto; }
figure img { image-rendering: pixelated; max-width: none; }
figcaption { color: #555; font-size: 0.9em; }
td.cell { text-align: right; min-width: 3em; }
"""
_IMG = re.compile(r'<img src="([^"]*)" alt="([^"]*)" />')


def render_html(report_md: str, summary: RunSummary, run_dir: Path) -> str:
    """The whole page: ``report_md`` (report.md's text) rendered, then the parts drawn from ``summary``, reading
    the pictures and run_config.json from ``run_dir``."""
    shown: set[str] = set()
    body = _inline_images(_markdown().render(report_md), run_dir, shown)
    sections = [body]
    if summary.global_model is not None:
        sections.append(_confusion_section(summary.global_model))
    for name, caption in PICTURES:
        if name not in shown and (run_dir / name).is_file():
            sections.append(f"<figure>{_img(run_dir / name, caption)}<figcaption>{html.escape(caption)}"
                            "</figcaption></figure>")
    sections.append(_provenance_section(summary, run_dir))
    title = html.escape(f"Run {summary.run_id}: {summary.status}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(sections)
            + "\n</body>\n</html>\n")


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline_images(body: str, run_dir: Path, shown: set[str]) -> str:
    """Each image the Markdown names becomes a data: URI when it is a picture of this run; any other is dropped."""

    def inline(match: re.Match[str]) -> str:
        name, alt = html.unescape(match[1]), html.unescape(match[2])
        path = run_dir / name
        if "/" in name or not name.endswith(".png") or not path.is_file():
            return html.escape(f"[{alt}: not part of this run's results]")
        shown.add(name)
        return _img(path, alt)

    return _IMG.sub(inline, body)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _confusion_section(g: GlobalEvaluation) -> str:
    """True class per row, predicted per column, pooled over every site; each cell shaded by its row's share."""
    names = [html.escape(str(n)) for n in g.class_names]
    rows = ["<h2>Pooled confusion matrix</h2>",
            ("<p>Test images of every site that answered, summed: true class per row, predicted class per column; "
             "recall is the diagonal over the row.</p>"),
            "<table><tr><th>true \\ predicted</th>" + "".join(f"<th>{n}</th>" for n in names) + "<th>recall</th></tr>"]
    for name, counts, recall in zip(names, g.confusion, g.recall, strict=True):
        total = sum(counts) or 1
        cells = "".join(f'<td class="cell" style="background: rgba(31, 119, 180, {0.85 * c / total:.2f})">{c}</td>'
                        for c in counts)
        shown = "n/a" if recall is None else f"{recall:.3f}"
        rows.append(f"<tr><th>{name}</th>{cells}<td class=\"cell\">{shown}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _provenance_section(summary: RunSummary, run_dir: Path) -> str:
    """When the run finished, the software that ran it and every resolved setting."""
    parts = ["<h2>Settings and software</h2>", f"<p>Written {html.escape(summary.finished_at)} (UTC).</p>"]
    if summary.software:
        parts.append(_table(["software", "version"], sorted(summary.software.items())))
    try:
        settings = json.loads((run_dir / "run_config.json").read_text())
    except (OSError, ValueError):
        settings = None
    if isinstance(settings, dict):
        parts.append(_table(["setting", "value"], sorted(settings.items())))
    return "\n".join(parts)


def _table(header: list[str], rows: list[tuple[Any, Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
