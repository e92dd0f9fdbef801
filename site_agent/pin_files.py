"""The pins files of a site's key directory: what its operator agreed to, out of band. ``pinned-apps.json``
(``site_agent.app_pins``: the app packages it serves) and ``pinned-peers.json`` (``site_agent.peers``: the
hospitals whose signed sets it trains scored models on) are read and written here, each pin a :class:`Pin`."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.errors import ConfigError
from shared.fields import first_problem
from site_agent.cache import write_atomically

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Pin(BaseModel):
    """When something was pinned, and the operator's note; each kind of pin adds what it pins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pinned_at: str  # UTC, ISO 8601: pinned_now()
    note: Annotated[str, Field(max_length=200)] = ""


def pinned_now() -> str:
    """A pin's time: now, UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Pins(BaseModel):
    """A pins file's content: its list of pins."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
