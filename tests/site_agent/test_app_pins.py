"""A site serves runs only of app packages it pinned, and only those declaring its own app and version."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from typer.testing import CliRunner

from shared.errors import ConfigError
from site_agent import app_pins
from site_agent.app_pins import AppRefused, load_pins, pin, unpin, verify_app
from site_agent.cli import app as site_agent_cli

PROJECT = Path(__file__).resolve().parents[2]


def fab(name: str = "feddistill", version: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """An app package as the SuperLink ships it: a zip with pyproject.toml first."""
    version = version or app_pins.installed_version()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pyproject.toml", f'[project]\nname = "{name}"\nversion = "{version}"\n')
        for path, content in (extra or {}).items():
            archive.writestr(path, content)
    return buffer.getvalue()


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_an_unpinned_package_is_refused_before_anything_of_it_is_read(tmp_path: Path) -> None:
    package = fab()
    with pytest.raises(AppRefused, match="has not pinned") as refused:
        verify_app(package, digest(package), load_pins(tmp_path))
    assert digest(package) in str(refused.value) and "apps pin" in refused.value.hint


def test_a_pinned_package_of_this_site_agent_is_served(tmp_path: Path) -> None:
    package = fab()
    pin(tmp_path, digest(package).upper(), note="study 7")  # as typed from a printout
    assert verify_app(package, digest(package), load_pins(tmp_path)).note == "study 7"


def test_the_hash_is_computed_at_the_site_not_taken_from_the_sender(tmp_path: Path) -> None:
    honest, hostile = fab(), fab(extra={"site_agent/client_app.py": b"send_raw_images()"})
    pin(tmp_path, digest(honest))
    with pytest.raises(AppRefused, match="does not match the hash"):
        verify_app(hostile, digest(honest), load_pins(tmp_path))  # claims the pinned hash
    with pytest.raises(AppRefused, match="has not pinned"):
        verify_app(hostile, "", load_pins(tmp_path))


@pytest.mark.parametrize("name, version", [("feddistill", "0.0.1"), ("other-app", None)])
def test_a_pinned_package_declaring_another_app_or_version_is_refused(tmp_path: Path, name: str,
                                                                      version: str | None) -> None:
    package = fab(name, version)
    pin(tmp_path, digest(package))
    with pytest.raises(AppRefused, match="but this site runs 'feddistill'"):
        verify_app(package, digest(package), load_pins(tmp_path))


@pytest.mark.parametrize("package", [b"not a zip", fab().replace(b"pyproject.toml", b"pyprojectXtoml")])
def test_a_pinned_package_without_a_readable_pyproject_is_refused(tmp_path: Path, package: bytes) -> None:
    pin(tmp_path, digest(package))
    with pytest.raises(AppRefused, match="no readable pyproject.toml"):
        verify_app(package, "", load_pins(tmp_path))


def test_this_projects_own_package_declares_the_installed_version() -> None:
    assert app_pins.declared_app(build_fab_from_disk(PROJECT)) == ("feddistill", app_pins.installed_version())


def test_unpin_and_malformed_pins(tmp_path: Path) -> None:
    package = fab()
    pin(tmp_path, digest(package))
    assert unpin(tmp_path, digest(package)) and not unpin(tmp_path, digest(package))
    with pytest.raises(AppRefused):
        verify_app(package, "", load_pins(tmp_path))
    with pytest.raises(ConfigError, match="64 hex digits"):
        pin(tmp_path, "abc")
    (tmp_path / app_pins.PINS_FILE).write_text(json.dumps({"apps": [{"fab_hash": "zz"}]}))
    with pytest.raises(ConfigError) as bad:
        load_pins(tmp_path)
    assert str(tmp_path) not in str(bad.value)  # a message that may travel names no local path


def test_the_apps_commands(tmp_path: Path) -> None:
    runner, hash_ = CliRunner(), digest(fab())
    done = runner.invoke(site_agent_cli, ["apps", "pin", "--key-dir", str(tmp_path), "--fab-hash", hash_,
                                          "--note", "breast study"])
    assert done.exit_code == 0 and f"pinned app package {hash_}" in done.output
    listed = runner.invoke(site_agent_cli, ["apps", "list", "--key-dir", str(tmp_path)])
    assert hash_ in listed.output and "breast study" in listed.output
    assert runner.invoke(site_agent_cli, ["apps", "unpin", "--key-dir", str(tmp_path), "--fab-hash", hash_]).exit_code == 0
    assert "every run is refused" in runner.invoke(site_agent_cli, ["apps", "list", "--key-dir", str(tmp_path)]).output
