"""Run configuration: pyproject's Flower config and RunConfig stay in step; bad values are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.config import RunConfig, resolve_device
from shared.errors import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_run_config_matches_defaults() -> None:
    """Every RunConfig field is in [tool.flwr.app.config] with the same default, and nothing else is."""
    flower = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert flower == RunConfig().to_flower()


@pytest.mark.parametrize(
    ("values", "match"),
    [({"no-such-key": 1}, "unknown run config key 'no-such-key'"), ({"ipc": 0}, "'ipc'"),
     ({"method": "gan"}, "'method'"), ({"sites": 2, "min-sites": 3}, "min-sites")],
)
def test_bad_run_config_is_named(values, match) -> None:
    """A wrong key or value names the key."""
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_flower(values)


def test_device_auto_and_bad_names() -> None:
    """auto resolves to a device; nonsense is a ConfigError."""
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("quantum")
