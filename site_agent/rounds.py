"""Refinement rounds at the site: the set this site released last round is where its next round starts.

The set is kept in the site's private cache (it left the site only sealed, to the coordinator) and
is never re-sent as is: from round 2 on the site refines it against the global model the coordinator
sends with the request, as well as fresh random networks, and releases a new sealed bundle.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from site_agent.cache import run_file, write_atomically
from site_agent.distill import SyntheticSet

log = logging.getLogger(__name__)


def keep_released_set(cache_dir: Path, run_id: str, synthetic: SyntheticSet) -> None:
    """Remember the set just released in this run, for the next round."""
    kept = {"images": synthetic.images, "labels": synthetic.labels}
    write_atomically(run_file(cache_dir, "rounds", run_id, ".pt"), lambda tmp: torch.save(kept, tmp))


def previous_set(cache_dir: Path, run_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images (N, C, H, W) and labels (N,) this site released in the last round of this run, or None."""
    path = run_file(cache_dir, "rounds", run_id, ".pt")
    if not path.is_file():
        log.warning("no set of an earlier round of this run is kept at this site: starting afresh")
        return None
    kept = torch.load(path, weights_only=True)
    return kept["images"], kept["labels"]
