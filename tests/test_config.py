"""Run configuration: pyproject's Flower config and RunConfig stay in step; bad values are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.config import RunConfig, resolve_device
from shared.errors import ConfigError
from shared.methods import DistillMethod
from shared.presets import PRESET_BATCH_REAL, PRESET_ITERATIONS, PRESET_LR_IMG

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_run_config_matches_defaults() -> None:
    """Every RunConfig field is in [tool.flwr.app.config] with the same default, and nothing else is."""
    flower = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert flower == RunConfig().to_flower()


@pytest.mark.parametrize(
    ("values", "match"),
    [({"no-such-key": 1}, "unknown run config key 'no-such-key'"), ({"ipc": 0}, "'ipc'"),
     ({"method": "gan"}, "'method'"), ({"sites": 2, "min-sites": 3}, "min-sites"),
     ({"method": "dc", "match": "mmd"}, "only dm and idm match embeddings"), ({"match": "median"}, "'match'")],
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


def test_each_method_gets_its_cpu_preset_unless_told_otherwise() -> None:
    """Leaving iterations, batch-real and lr-img at 0 gives each method its own preset, not DC's numbers."""
    for method in DistillMethod:
        config = RunConfig(method=method).distill_config()
        assert config.iterations == PRESET_ITERATIONS[method]
        if method in PRESET_BATCH_REAL:  # MTT's experts see every image, DPDM's one release too
            assert config.batch_real == PRESET_BATCH_REAL[method]
        assert config.lr_img == PRESET_LR_IMG.get(method, type(config).model_fields["lr_img"].default)
    assert RunConfig(method=DistillMethod.DM, iterations=7, batch_real=9).distill_config().iterations == 7
    assert RunConfig(method=DistillMethod.IDM, lr_img=0.5).distill_config().lr_img == 0.5
    assert RunConfig(method=DistillMethod.DM, iterations=7, batch_real=9).distill_config().batch_real == 9


def test_match_reaches_the_sites_for_dm_and_idm() -> None:
    """The embedding match a run asks for is in the distill config every site receives."""
    for method in (DistillMethod.DM, DistillMethod.IDM):
        assert RunConfig.from_flower({"method": method.value, "match": "mmd"}).distill_config().match == "mmd"
        assert RunConfig(method=method).distill_config().match == "mean"
