"""Per-run files in the site's private cache, named so a coordinator-chosen run id cannot pick a path."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def run_file(cache_dir: Path, kind: str, run_id: str, suffix: str) -> Path:
    """``<cache-dir>/<kind>/<sha256(run id)[:32]><suffix>``: the run id comes from the coordinator, so it is hashed."""
    return cache_dir / kind / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}{suffix}"


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then move it into place: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``<folder>/.lock`` exclusively (fcntl) while the block runs: per-message processes take turns."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
