"""What the listing commands of both CLIs print: a headed table for people, or ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def show(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], title: str | None = None) -> None:
    """A table with ``columns`` (row key -> header); a missing value is shown as ``-``."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for header in columns.values():
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key in columns))
    # Piped output keeps whole lines (no wrapping at 80 columns); a terminal gets its own width.
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 250, highlight=False)
    console.print(table)


def show_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
