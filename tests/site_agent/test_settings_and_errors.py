"""A site's settings come from its own node config, and what it reports on failure names no local details."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import RunConfig
from shared.errors import ConfigError, KeyFileError
from site_agent.client_app import _safely
from site_agent.identity import load_site_identity
from site_agent.settings import site_settings


def test_simulated_site_takes_its_partition_and_run_keys(tmp_path: Path) -> None:
    """Without a site id, node i is simulated site-i with keys in the run folder."""
    settings = site_settings({"partition-id": 1, "num-partitions": 3}, RunConfig(), tmp_path)
    assert settings.simulated and settings.site_id == "site-1"
    assert settings.key_dir == tmp_path / "keys" / "site-1" and settings.partition.count == 3


def test_deployed_site_reads_node_config(tmp_path: Path) -> None:
    """A deployed site uses its own site id, key directory and policy defaults; key-dir is required."""
    settings = site_settings({"site-id": "st-marys", "key-dir": str(tmp_path)}, RunConfig(init="real"), tmp_path)
    assert not settings.simulated and settings.site_id == "st-marys" and settings.partition is None
    assert not settings.policy.allow_real_init  # the coordinator's run config cannot grant it
    with pytest.raises(ConfigError, match="key-dir"):
        site_settings({"site-id": "st-marys"}, RunConfig(), tmp_path)
    with pytest.raises(ConfigError, match="num-partitions"):
        site_settings({"site-id": "a", "key-dir": str(tmp_path), "partition-id": 0, "num-partitions": "many"},
                      RunConfig(), tmp_path)


def test_missing_key_directory_fails_clearly(tmp_path: Path) -> None:
    """A site without keys fails at once, naming the site, not the path."""
    with pytest.raises(KeyFileError, match="key directory of site 'a'") as info:
        load_site_identity("a", tmp_path / "secret-ward-7")
    assert "secret-ward-7" not in str(info.value)


def test_unexpected_errors_travel_without_their_text() -> None:
    """An exception that is not ours could quote a path or value: only its type leaves the site."""

    def leaky() -> None:
        raise OSError("/data/patients/jane-doe.png unreadable")

    with pytest.raises(RuntimeError) as info:
        _safely(leaky)
    assert "jane-doe" not in str(info.value) and "OSError" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), 5e3])
def test_release_refuses_non_images(keys, value) -> None:
    """A diverged set (NaN or absurd values) is never sealed: the site says so instead."""
    import numpy as np

    from shared.datasets import dataset_info
    from shared.errors import DataError
    from site_agent.release import seal_release
    from tests.conftest import make_request, make_synthetic

    _, sites = keys
    request = make_request()
    synthetic = make_synthetic(request, np.full((4, 1, 28, 28), value, np.float32))
    with pytest.raises(DataError, match="nothing was released"):
        seal_release(synthetic, request, sites["site-0"], dataset_info("breastmnist"), 100)
