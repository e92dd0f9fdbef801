"""docs/coordinator.md's one-machine deployment walk works when followed literally.

The walk's bash block runs as written in a copy of the project folder (with ``../shared/data/medmnist``
beside it), except that ``coordinator run`` gets small distillation settings appended so that it takes
minutes, not ten. The walk's last line stops what it started; the test checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from coordinator.summary import read_summary
from tests.deployment.live import PROJECT, TINY, app_snapshot, working_in

WALK_DOC = PROJECT / "docs" / "coordinator.md"
SMALL = {k: v for k, v in TINY.items() if k not in ("dataset", "sites", "min-sites", "node-wait-timeout")}


def walk_block() -> str:
    """The first bash block after the heading 'A whole deployment on one machine'."""
    text = WALK_DOC.read_text()
    section = text[text.index("## A whole deployment on one machine"):]
    return re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.live
@pytest.mark.flower
@pytest.mark.realdata
def test_the_one_machine_walk_runs_as_written(data_root: Path, tmp_path: Path) -> None:
    project = app_snapshot(tmp_path / "work")
    (project / "docs").mkdir()
    data_link = project.parent / "shared" / "data"
    data_link.mkdir(parents=True)
    (data_link / "medmnist").symlink_to(data_root.resolve())
    settings = " ".join(f"--set {key}={json.dumps(value) if isinstance(value, str) else value}"
                        for key, value in SMALL.items())
    script = walk_block().replace("--sites 2 --min-sites 2\n", f"--sites 2 --min-sites 2 {settings}\n", 1)
    assert settings in script, "the walk's `coordinator run` line changed: update this test's substitution"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "unused-flwr-home"),  # the walk keeps its own .flwr-home
           "XDG_CACHE_HOME": str(tmp_path / "cache")}  # the sites' default caches (<it>/feddistill/<site-id>) stay here
    with (tmp_path / "walk.log").open("wb") as log:
        walk = subprocess.Popen(["bash", "-e", "-c", script], cwd=project, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = walk.wait(timeout=900)
            # The walk's last line stops what it started: nothing of it may be left once they have exited.
            deadline = time.monotonic() + 30
            while (left := working_in(tmp_path)) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            walk.kill()
            for pid in working_in(tmp_path):
                os.kill(pid, signal.SIGKILL)
    output = (tmp_path / "walk.log").read_text(errors="replace")
    assert status == 0, output[-6000:]
    assert not left, f"processes outlived the walk: {left}"
    [run_dir] = (project / "walk" / "results").glob("run-*")
    summary = read_summary(run_dir)
    assert summary.status == "completed" and summary.sites_accepted == 2, output[-4000:]
    assert f"{run_dir.name}: finished:completed" in output  # what `coordinator run` said at the end
