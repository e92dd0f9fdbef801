"""Text that another party sent (a site's error reason, an echo of its field) made safe to log and render.

A site's reason may hold anything: newlines that forge log lines, ``|`` that breaks a report table,
``![..](http://..)`` that makes a viewer fetch a remote image, or megabytes of text. Everything a
site sends passes through :func:`untrusted_text` before it is logged or written into a report.
"""

from __future__ import annotations

import re

MAX_REASON_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MARKUP = str.maketrans({"|": "/", "`": "'", "<": "(", ">": ")", "[": "(", "]": ")", "!": "."})


def untrusted_text(text: object, limit: int = MAX_REASON_CHARS) -> str:
    """One line of at most ``limit`` characters, without control characters or Markdown/HTML markup."""
    flat = _CONTROL.sub(" ", str(text)).translate(_MARKUP).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
