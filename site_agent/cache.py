"""Per-run files in the site's private cache, named so a coordinator-chosen run id cannot pick a path."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from shared.errors import ConfigError
from shared.fields import first_problem

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


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


def read_pins_file(path: Path, model: type[M], what: str) -> M:
    """A pins file of the site's key directory as ``model`` (its empty value when the file does not exist).

    Raises:
        ConfigError: the file is unreadable or malformed (its path and the problem go to the site's log only).
    """
    if not path.exists():
        return model()
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        problem = first_problem(exc) if isinstance(exc, ValidationError) else type(exc).__name__
        log.error("%s file %s: %s", what, path, problem)
        raise ConfigError(f"the site's {what} file cannot be read; its log says why") from None


def write_pins_file(path: Path, pins: BaseModel) -> None:
    """Write a pins file atomically, creating the key directory (0700) if needed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = pins.model_dump_json(indent=2) + "\n"
    write_atomically(path, lambda target: target.write_text(text))


def normalized_digest(text: str, problem: str, hint: str) -> str:
    """A SHA-256 as typed into a pin command (any case, spaces, colons or dashes between groups), as 64 lower-case hex.

    Raises:
        ConfigError: ``problem`` with ``hint``, when it is not one.
    """
    cleaned = "".join(ch for ch in text.strip().lower() if ch not in " :-")
    if len(cleaned) != 64 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise ConfigError(problem, hint=hint)
    return cleaned
