"""What the people who run it read: Flower's noise kept out of a site's log and of `coordinator run`'s output,
our own lines and every warning kept."""

from __future__ import annotations

import io
import logging
import sys
from types import SimpleNamespace

from coordinator import control
from shared.logs import readable_flower_line
from site_agent.join import relay_output

# As Flower prints them: colour codes, its padded "LEVEL :" prefix, empty separator lines.
FLOWER_EMPTY = "\x1b[92mINFO \x1b[0m:      \n"
FLOWER_INFO = "\x1b[92mINFO \x1b[0m:      [RUN 17, ROUND ]\n"
FLOWER_DEBUG = "\x1b[94mDEBUG \x1b[0m: Using InMemoryState\n"
FLOWER_WARNING = "\x1b[93mWARNING \x1b[0m:   Connection refused, retrying in 5 s\n"
OURS = "2026-12-04 19:00:00,000 INFO site_agent.handlers: DM iteration 60/200: matching loss 0.41\n"
TRACEBACK = '  File "/x/site_agent/handlers.py", line 3, in answer_distill\n'


def test_flower_lines_below_the_level_and_empty_separators_are_dropped_ours_and_warnings_kept() -> None:
    at_info = [readable_flower_line(line, logging.INFO) for line in
               (FLOWER_EMPTY, FLOWER_INFO, FLOWER_DEBUG, FLOWER_WARNING, OURS, TRACEBACK)]
    assert at_info == [None, "INFO :      [RUN 17, ROUND ]", None, "WARNING :   Connection refused, retrying in 5 s",
                       OURS.rstrip("\n"), TRACEBACK.rstrip("\n")]
    assert readable_flower_line(FLOWER_INFO, logging.WARNING) is None
    assert readable_flower_line(FLOWER_DEBUG, logging.DEBUG) == "DEBUG : Using InMemoryState"
    assert readable_flower_line(FLOWER_EMPTY, logging.DEBUG) is None


def test_a_site_log_keeps_its_own_lines_and_flower_warnings_and_still_reads_flowers_exit_code(caplog) -> None:
    """`site-agent join` relays the SuperNode's output: Flower's INFO chatter (68 of 89 lines, measured) is gone,
    and the one INFO line that matters, the node being let in, is said in our own words."""
    lines = [FLOWER_EMPTY, FLOWER_INFO, "\x1b[92mINFO \x1b[0m:      SuperNode ID: 8125\n", OURS, FLOWER_DEBUG,
             FLOWER_WARNING, "\x1b[92mINFO \x1b[0m: Exit Code: 305\n"]
    out = io.BytesIO()
    with caplog.at_level(logging.INFO, logger="site_agent.join"):
        code = relay_output(io.BytesIO("".join(lines).encode()), out, lowest=logging.WARNING)
    assert out.getvalue().decode().splitlines() == [OURS.rstrip("\n"), "WARNING :   Connection refused, retrying in 5 s"]
    assert code == 305
    assert caplog.messages == ["SuperNode is in: the SuperLink accepted it as node 8125; waiting for requests"]


def test_coordinator_run_follows_the_log_without_debug_lines_or_empty_info_lines(monkeypatch, capsys) -> None:
    script = "import sys; sys.stdout.write(%r)" % (FLOWER_DEBUG + FLOWER_EMPTY + FLOWER_INFO + OURS)
    monkeypatch.setattr(control, "log_command", lambda conn, run_id: [sys.executable, "-c", script])
    conn = SimpleNamespace(env=lambda: None)
    assert control.follow_log(conn, 17) == 0
    assert capsys.readouterr().out.splitlines() == ["INFO :      [RUN 17, ROUND ]", OURS.rstrip("\n")]
