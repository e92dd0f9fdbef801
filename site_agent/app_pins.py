"""Which of the coordinator's app packages this site has agreed to serve: ``site-agent apps pin | list | unpin``.

A Flower run carries an app package (FAB) that the SuperLink ships to every SuperNode. This site never
installs or runs the FAB's code: every message is handled by the site agent the hospital installed
(``site_agent.task``). What a pin covers is consent: the hospital takes part in runs of this exact
package (its SHA-256, which ``coordinator app-hash`` and ``coordinator run`` print), and only while the
package declares the same app and version as the installed site agent, so the coordinator's side of
the protocol is the one the hospital reviewed. A run of any other package is refused before anything
of it is read, and the refusal is audited.

Pins live in ``<key-dir>/pinned-apps.json``, beside the pinned coordinator key, and are set out of band.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from pydantic import Field

from shared.errors import PolicyError
from site_agent.pin_files import Pin, Pins, Sha256Hex, normalized_digest, pinned_now, read_pins_file, write_pins_file

log = logging.getLogger(__name__)

PINS_FILE = "pinned-apps.json"
APP_NAME = "feddistill"
_MAX_PYPROJECT_BYTES = 1 << 20  # the FAB's pyproject.toml; a larger one is refused rather than read

class AppRefused(PolicyError):
    """This site does not serve the run's app package."""

    hint = "the site's operator pins a study's app package with `site-agent apps pin --fab-hash <sha256>`"


class PinnedApp(Pin):
    fab_hash: Sha256Hex


class PinnedApps(Pins):
    apps: list[PinnedApp] = Field(default_factory=list)

    def find(self, fab_hash: str) -> PinnedApp | None:
        return next((app for app in self.apps if app.fab_hash == fab_hash), None)


def installed_version() -> str:
    """The version of the site agent installed here (this package's distribution)."""
    return metadata.version(APP_NAME)


def normalized_hash(text: str) -> str:
    """A FAB hash as typed, as 64 lower-case hex digits.

    Raises:
        ConfigError: it is not a SHA-256 hex digest.
    """
    return normalized_digest(text, "a FAB hash is the 64 hex digits of its SHA-256",
                             hint="copy it from `coordinator app-hash`")


def load_pins(key_dir: Path) -> PinnedApps:
    """The site's pins (none when the file does not exist).

    Raises:
        ConfigError: the pins file is unreadable or malformed (its path is logged here, never sent).
    """
    return read_pins_file(key_dir / PINS_FILE, PinnedApps, "pinned-apps")


def pin(key_dir: Path, fab_hash: str, note: str = "") -> PinnedApp:
    """Pin a FAB hash (again: its note and time are updated); returns the pin."""
    pins = load_pins(key_dir)
    digest = normalized_hash(fab_hash)
    new = PinnedApp(fab_hash=digest, pinned_at=pinned_now(), note=note)
    _save(key_dir, PinnedApps(apps=[a for a in pins.apps if a.fab_hash != digest] + [new]))
    return new


def unpin(key_dir: Path, fab_hash: str) -> bool:
    """Remove a pin; returns whether there was one."""
    pins, digest = load_pins(key_dir), normalized_hash(fab_hash)
    kept = [a for a in pins.apps if a.fab_hash != digest]
    _save(key_dir, PinnedApps(apps=kept))
    return len(kept) != len(pins.apps)


def _save(key_dir: Path, pins: PinnedApps) -> None:
    write_pins_file(key_dir / PINS_FILE, pins)


def verify_app(fab: bytes, claimed_hash: str, pins: PinnedApps, version: str | None = None) -> PinnedApp:
    """The pin that lets this site serve a run of ``fab``; the hash is computed here, never taken on trust.

    Raises:
        AppRefused: the package is not pinned, its bytes do not match the hash it came with, or it declares
            another app or version than the installed site agent (``version``, default: installed).
    """
    digest = hashlib.sha256(fab).hexdigest()
    if claimed_hash and claimed_hash != digest:
        raise AppRefused("the run's app package does not match the hash it was sent with; nothing was run")
    pinned = pins.find(digest)
    if pinned is None:
        raise AppRefused(f"this site has not pinned the run's app package (sha256 {digest}); nothing was run")
    name, declared = declared_app(fab)
    expected = version or installed_version()
    if (name, declared) != (APP_NAME, expected):
        raise AppRefused(f"the pinned app package declares {name!r} version {declared!r}, but this site runs "
                         f"{APP_NAME!r} version {expected!r}; nothing was run")
    return pinned


def declared_app(fab: bytes) -> tuple[str, str]:
    """The ``[project]`` name and version the package's pyproject.toml declares (read, never executed).

    Raises:
        AppRefused: the package is not a zip holding a readable pyproject.toml.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            info = archive.getinfo("pyproject.toml")
            if info.file_size > _MAX_PYPROJECT_BYTES:
                raise AppRefused("the run's app package has an oversized pyproject.toml; nothing was run")
            project = tomllib.loads(archive.read(info).decode()).get("project", {})
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise AppRefused("the run's app package holds no readable pyproject.toml; nothing was run") from None
    return str(project.get("name", "")), str(project.get("version", ""))
