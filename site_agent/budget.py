"""How often a coordinator may have the site score a model in one run: the evaluate request is an oracle.

Every ``evaluate`` request scores whatever weights the coordinator sends on the site's own test
images. Unlimited, that lets a curious coordinator probe the test data one model at a time. The
site's policy caps evaluations per run (``max_evaluations_per_run``); the count is kept in the
site's private cache, so it survives the per-message ClientApp processes of a deployment.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.errors import PolicyError
from site_agent.cache import run_file, write_atomically


def spend_evaluation(cache_dir: Path, run_id: str, limit: int) -> int:
    """Count one more evaluation for ``run_id``; returns how many this run has had, this one included.

    Raises:
        PolicyError: the run has already had ``limit`` evaluations; nothing is scored.
    """
    path = run_file(cache_dir, "evaluations", run_id, ".json")
    done = json.loads(path.read_text())["evaluations"] if path.is_file() else 0
    if done >= limit:
        raise PolicyError(f"this run has had the {limit} evaluations this site's policy allows per run")
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps({"evaluations": done + 1})))
    return done + 1
