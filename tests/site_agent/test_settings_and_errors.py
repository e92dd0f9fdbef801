"""A site's settings come from its own node config, and what it reports on failure names no local details."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ConfigError, KeyFileError
from site_agent.client_app import _safely
from site_agent.identity import load_site_identity
from site_agent.settings import site_settings


def test_deployed_site_reads_node_config(tmp_path: Path) -> None:
    """A deployed site uses its own site id, key directory and policy defaults; key-dir is required."""
    settings = site_settings({"site-id": "st-marys", "key-dir": str(tmp_path)})
    assert settings.site_id == "st-marys" and not settings.policy.allow_real_init
    assert settings.verify_md5 and settings.device == "auto" and settings.data_root == ""
    other = site_settings({"site-id": "a", "key-dir": "~/keys", "verify-md5": "false", "cache-dir": "~/c",
                           "partition-id": 1})  # keys a site does not read (an old node config's) are ignored
    assert other.key_dir == Path("~/keys").expanduser() and other.cache_dir == Path("~/c").expanduser()
    assert not other.verify_md5


@pytest.mark.parametrize(
    ("node_config", "match"),
    [
        ({"site-id": "st-marys"}, "node config 'key-dir': Field required"),
        ({"site-id": "st marys", "key-dir": "k"}, "node config 'site-id': String should match pattern"),
        ({"site-id": "a", "key-dir": "k", "verify-md5": "perhaps"}, "node config 'verify-md5'"),
        ({"partition-id": 1, "num-partitions": 3}, "node config 'site-id': Field required"),
    ],
    ids=["no-key-dir", "bad-site-id", "bad-bool", "simulation-node"],
)
def test_bad_node_config_names_the_key(node_config: dict, match: str) -> None:
    """A missing or malformed node config value is a ConfigError naming its kebab-case key."""
    with pytest.raises(ConfigError, match=match):
        site_settings(node_config)


def test_missing_key_directory_fails_clearly(tmp_path: Path) -> None:
    """A site without keys fails at once, naming the site, not the path."""
    with pytest.raises(KeyFileError, match="key directory of site 'a'") as info:
        load_site_identity("a", tmp_path / "secret-ward-7")
    assert "secret-ward-7" not in str(info.value) and "site-agent init" in info.value.hint
    assert "secret-ward-7" in info.value.local_detail


def test_a_site_that_has_not_pinned_the_coordinator_is_told_the_next_step(tmp_path: Path) -> None:
    """After `site-agent init` the missing piece is the coordinator's key: the hint names trust-coordinator."""
    from shared.keys import create_site_identity

    create_site_identity(tmp_path / "keys")
    with pytest.raises(KeyFileError, match="no coordinator key is pinned for site 'a'") as info:
        load_site_identity("a", tmp_path / "keys")
    assert "site-agent trust-coordinator" in info.value.hint and "site-agent init" not in info.value.hint


def test_key_hints_name_the_step_that_makes_the_missing_file_and_never_send_init_to_redo_itself(tmp_path: Path) -> None:
    """`init` run twice is told the keys are kept, not to run `init`; a missing coordinator key names `coordinator
    init`; a missing signing key names `site-agent init`."""
    from shared import crypto
    from shared.keys import create_coordinator_key, create_site_identity

    create_site_identity(tmp_path / "site")
    with pytest.raises(KeyFileError, match="already holds a signing key") as again:
        create_site_identity(tmp_path / "site")
    assert "never overwritten" in again.value.hint and "site-agent init" not in again.value.hint
    with pytest.raises(KeyFileError, match="not found") as coordinator:
        crypto.load_private_key(tmp_path / "coordinator.key", crypto.RecipientKey)
    assert "`coordinator init`" in coordinator.value.hint
    with pytest.raises(KeyFileError, match="not found") as signing:
        crypto.load_private_key(tmp_path / "signing.key", crypto.SigningKey)
    assert "`site-agent init --key-dir DIR`" in signing.value.hint
    create_coordinator_key(tmp_path / "coord")
    with pytest.raises(KeyFileError, match="coordinator key already exists") as twice:
        create_coordinator_key(tmp_path / "coord")
    assert "never overwritten" in twice.value.hint


def test_a_key_whose_mode_loosened_after_join_is_refused_without_its_path(tmp_path: Path, caplog) -> None:
    """The handler loads the site's keys for every request: the refusal that travels names the kind of key, the
    site's own log names the file."""
    from shared.keys import create_site_identity

    keys = tmp_path / "dr-jones-keys"
    create_site_identity(keys)
    (keys / "signing.key").chmod(0o640)
    with pytest.raises(KeyFileError, match="signing key file is open to other users") as info:
        load_site_identity("a", keys)
    assert "dr-jones-keys" not in str(info.value) and "signing.key" not in str(info.value)
    assert str(keys / "signing.key") in info.value.local_detail and str(keys / "signing.key") in caplog.text
    (keys / "signing.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="no coordinator key is pinned") as unpinned:
        load_site_identity("a", keys)
    assert "coordinator.pub" not in str(unpinned.value) and str(keys / "coordinator.pub") in unpinned.value.local_detail


def test_the_site_refuses_a_forged_run_id_naming_the_field_not_echoing_it() -> None:
    """A run id with a newline and escape codes is refused at the door; the refusal the coordinator gets back
    names the field and the rule, never the text it sent."""
    from types import SimpleNamespace

    from shared.schemas import DistillRequest
    from shared.wire import FieldKey, RecordKey
    from site_agent.client_app import _read_request
    from tests.conftest import make_request

    forged = "run-1\n approved by Dr A. Jones \x1b[2K"
    text = make_request().model_dump_json().replace('"run-1"', json.dumps(forged))
    message = SimpleNamespace(content=SimpleNamespace(
        config_records={RecordKey.REQUEST: {FieldKey.REQUEST_JSON: text}}))
    with pytest.raises(ConfigError, match=r"DistillRequest field 'run_id': String should match pattern") as info:
        _read_request(message, DistillRequest)
    assert "approved" not in str(info.value) and "\x1b" not in str(info.value)


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
