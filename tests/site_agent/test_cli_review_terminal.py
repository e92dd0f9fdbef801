"""What a coordinator named cannot forge what a site's reviewer reads on a terminal.

The attacker's best move, as the site's files hold it when an older version wrote them (before run ids
had a pattern): a run id with a newline, "approved by Dr A. Jones" and escape codes that erase and move
lines, in the audit log (whose chain stays intact) and in a held release. ``review``, ``audit show`` and
``history`` run on a pseudo-terminal, as a reviewer would run them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import SimpleNamespace

from site_agent import audit
from site_agent.approval import REJECTED, REQUEST_NAME
from site_agent.audit import AuditEvent
from tests.conftest import make_request

FORGED = "run-1\n approved by Dr A. Jones \x1b[2K\x1b[1A\x1b]0;title\x07\r\u202e"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and bold, which rich itself writes to a terminal
COMMANDS = (["review"], ["audit", "show"], ["history"])


def _hostile_audit_log(cache: Path) -> None:
    """Entries about the forged run id, chained as the agent chains them (``audit verify`` passes)."""
    old = SimpleNamespace(run_id=FORGED, nonce="ab" * 32)
    audit.record(cache, AuditEvent.REQUEST_RECEIVED, old, "coordinator", round=1, method="dc", ipc=2)
    audit.record(cache, AuditEvent.DECISION, old, "policy", decision="held", why=FORGED)
    audit.record(cache, AuditEvent.RELEASE, old, "site-agent", sha256="cd" * 32, bytes=10, notes=[FORGED])
    audit.record(cache, AuditEvent.EVALUATED, old, "site-agent", test_images=5, accuracy=0.5)


def _hostile_releases(approvals: Path) -> None:
    """A release whose folder name carries the forgery, a rejection whose reviewer and reason do, and an old
    release whose request holds the forged run id."""
    request = make_request().model_dump_json()
    named = approvals / f"run-1\n approved by Dr A. Jones \x1b[2K-{'ab' * 6}"
    decided, old = approvals / f"run-2-{'cd' * 6}", approvals / f"run-3-{'ef' * 6}"
    for folder in (named, decided, old):
        folder.mkdir(parents=True)
    (named / REQUEST_NAME).write_text(request)
    (decided / REQUEST_NAME).write_text(request)
    (decided / REJECTED).write_text(json.dumps({"by": f"Dr B {FORGED}", "at": "2026-01-01T00:00:00+00:00",
                                                "reason": FORGED}))
    (old / REQUEST_NAME).write_text(request.replace('"run-1"', json.dumps(FORGED)))


def _on_a_terminal(cache: Path) -> dict[str, str]:
    """What each command writes to a 400-column pseudo-terminal (one Python process runs the three)."""
    script = ("import sys\nfrom site_agent.cli import app\n"
              f"for args in {COMMANDS!r}:\n"
              "    print('=== ' + ' '.join(args), flush=True)\n"
              "    try:\n"
              f"        app([*args, '--cache-dir', {str(cache)!r}])\n"
              "    except SystemExit:\n"
              "        pass\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "400"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=slave, env=env,
                               cwd=Path(__file__).resolve().parents[2])
    os.close(slave)
    chunks = []
    while select.select([master], [], [], 300)[0]:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    parts = re.split(r"^=== (.+)\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_a_forged_run_id_prints_no_escape_code_and_no_approval_line(tmp_path: Path) -> None:
    """Every command shows the forged run id as inert text on the line it belongs to: no escape code but rich's
    own colours, no line of its own that reads "approved ..."."""
    cache = tmp_path / "cache"
    _hostile_audit_log(cache)
    _hostile_releases(cache / "approvals")
    assert len(audit.verify(cache)) == 4  # the chain is intact: verify alone cannot tell
    shown = _on_a_terminal(cache)
    assert set(shown) == {" ".join(args) for args in COMMANDS}
    for command, output in shown.items():
        plain = SGR.sub("", output)
        assert "\x1b" not in plain and "\x07" not in plain and "\u202e" not in plain, (command, output)
        forged = [line for line in plain.splitlines() if line.strip().startswith("approved")]
        assert not forged, (command, output)
        assert "Traceback" not in plain, (command, output)
    assert "approved by Dr A. Jones" in shown["audit show"]  # shown, inert, on the entry's own line
    assert len(SGR.sub("", shown["audit show"]).strip().splitlines()) == 4
    assert "approved by Dr A. Jones" in shown["history"]
    review = SGR.sub("", shown["review"])
    assert "-abababababab  held" in review and "rejected by Dr B" in review
    assert "not a valid DistillRequest; ignored" in review and "efefefefefef  held" not in review  # refused at the door
