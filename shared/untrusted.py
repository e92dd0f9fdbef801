"""Text that another party sent (a site's error reason, a coordinator's run id) made safe to log and render.

A site's reason may hold anything: newlines that forge log lines, ``|`` that breaks a report table,
``![..](http://..)`` that makes a viewer fetch a remote image, or megabytes of text. A coordinator's run
id reaches a site's terminal (``site-agent review``, ``audit show``, ``history``), where an escape code
can erase a line and a newline can print a forged one ("approved by ..."). Everything one side sends
passes through :func:`untrusted_text` before the other side logs it, prints it or writes it into a report.
"""

from __future__ import annotations

import re

MAX_REASON_CHARS = 300
# C0 and C1 controls (ESC starts a terminal's escape codes), line and paragraph separators, and the invisible
# format characters that reorder or hide text (bidi overrides and isolates, zero-width marks, BOM).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]+")
_MARKUP = str.maketrans({"|": "/", "`": "'", "<": "(", ">": ")", "[": "(", "]": ")", "!": "."})


def untrusted_text(text: object, limit: int = MAX_REASON_CHARS) -> str:
    """One line of at most ``limit`` characters, without control characters or Markdown/HTML markup."""
    flat = _CONTROL.sub(" ", str(text)).translate(_MARKUP).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
