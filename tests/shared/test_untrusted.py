"""What a site sends is logged and rendered as one short, inert line."""

from __future__ import annotations

import pytest

from coordinator.report import render_report
from shared.untrusted import MAX_REASON_CHARS, untrusted_text


@pytest.mark.parametrize(
    ("sent", "forbidden"),
    [
        ("ok\n2026-01-01 INFO coordinator: run completed", "\n"),
        ("a | b | c |", "|"),
        ("see ![x](http://evil.example/pixel.png)", "]("),
        ("<img src=http://evil.example/x>", "<"),
        ("tab\tand\r\u2028separators", "\u2028"),
        ("run-1\x1b[2K\x1b[1Aapproved", "\x1b"),  # a terminal's escape codes: erase a line, move up
        ("run-1\x9b2K", "\x9b"),  # the same as one C1 control
        ("\u202eevorppa \u2066x\u2069", "\u202e"),  # bidi override: the text reads reversed
        ("zero\u200bwidth\ufeff", "\u200b"),
    ],
)
def test_markup_and_control_characters_are_neutralised(sent: str, forbidden: str) -> None:
    """Line breaks, table pipes, links and tags cannot reach a log line or the report as markup."""
    assert forbidden not in untrusted_text(sent)


def test_long_text_is_capped() -> None:
    """A megabyte of reason becomes a few hundred characters."""
    assert len(untrusted_text("x" * 1_000_000)) == MAX_REASON_CHARS


def test_report_row_stays_one_row() -> None:
    """A hostile reason in the site table leaves the table's shape intact."""
    from coordinator.receive import OutcomeStatus
    from coordinator.summary import RunStatus, RunSummary, SiteEntry
    from shared.config import RunConfig

    summary = RunSummary.begun(RunConfig(method="dm", ipc=1, iterations=1, sites=1), "r", RunStatus.FAILED)
    summary.sites = [SiteEntry(site_id="s", node_id=1, status=OutcomeStatus.REJECTED,
                               reason=untrusted_text("x |\n| injected | row |"))]
    rows = [line for line in render_report(summary).splitlines() if line.startswith("| s ")]
    assert len(rows) == 1 and rows[0].count("|") == 7


def test_a_validation_error_names_a_hostile_field_without_its_control_characters() -> None:
    """An unexpected key is the sender's own text, and pydantic puts it in the error's location."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    from shared.fields import first_problem

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    hostile = "\x1b[2J\nINFO coordinator: site-b approved" + "x" * 10_000
    try:
        Strict.model_validate({hostile: 1})
    except ValidationError as exc:
        problem = first_problem(exc)
    assert "\x1b" not in problem and "\n" not in problem and len(problem) < 400
