"""Refinement rounds at the site: the set this site released last round is where its next round starts.

The set is kept in the site's private cache (it left the site only sealed, to the coordinator) and
is never re-sent as is: from round 2 on the site refines it against the global model the coordinator
sends with the request, as well as fresh random networks, and releases a new sealed bundle.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from site_agent.distill import SyntheticSet

log = logging.getLogger(__name__)


def _path(cache_dir: Path, run_id: str) -> Path:
    # The run id comes from the coordinator: hash it rather than use it as a file name.
    return cache_dir / "rounds" / hashlib.sha256(run_id.encode()).hexdigest()[:32] / "released.pt"


def keep_released_set(cache_dir: Path, run_id: str, synthetic: SyntheticSet) -> None:
    """Remember the set just released in this run, for the next round."""
    path = _path(cache_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"images": synthetic.images, "labels": synthetic.labels}, tmp)
    tmp.replace(path)


def previous_set(cache_dir: Path, run_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images (N, C, H, W) and labels (N,) this site released in the last round of this run, or None."""
    path = _path(cache_dir, run_id)
    if not path.is_file():
        log.warning("no set of an earlier round of this run is kept at this site: starting afresh")
        return None
    kept = torch.load(path, weights_only=True)
    return kept["images"], kept["labels"]
