"""The site policy file (validation, MTT caps, time limit, `policy init/show`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.errors import ConfigError, PolicyError
from shared.schemas import MTTConfig
from site_agent.cli import app
from site_agent.policy import SitePolicy
from tests.conftest import make_request

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"max_ipc": "lots"}', "'policy.json' is not a valid policy: field 'max_ipc'"),
        ('{"max_ipcs": 5}', "field 'max_ipcs': Extra inputs are not permitted"),
        ('{"mtt": {"max_syn_steps": 0}}', "field 'mtt.max_syn_steps'"),
        ('{"max_seconds": -1}', "field 'max_seconds'"),
        ('{"allowed_methods": ["dc", "gan"]}', "field 'allowed_methods.1'"),
        ('{"max_ipc": 5,}', r"not JSON \(line 1"),
    ],
)
def test_policy_file_errors_name_the_field(tmp_path: Path, text: str, match: str) -> None:
    """A bad policy file is a ConfigError naming the first bad field (or where the JSON breaks)."""
    (tmp_path / "policy.json").write_text(text)
    with pytest.raises(ConfigError, match=match):
        SitePolicy.from_file(tmp_path / "policy.json")


def test_a_policy_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    """Found by tests/test_fuzz_doors.py: a non-UTF-8 byte raised UnicodeDecodeError."""
    (tmp_path / "policy.json").write_bytes(b'{"max_ipc": 5\x80}')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 13\)"):
        SitePolicy.from_file(tmp_path / "policy.json")


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    """A missing file is named by its file name only."""
    with pytest.raises(ConfigError, match="'nope.json' not found"):
        SitePolicy.from_file(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("change", "match"),
    [({"syn_steps": 60}, "mtt syn_steps 60 exceeds"), ({"num_experts": 21}, "mtt num_experts 21 exceeds"),
     ({"train_epochs_expert": 60}, "mtt train_epochs_expert 60 exceeds")],
)
def test_mtt_caps_refuse_costly_requests(change: dict, match: str) -> None:
    """MTT's expensive knobs have site caps the coordinator cannot raise."""
    request = make_request().model_copy(update={"distill": MTTConfig(**change)})
    with pytest.raises(PolicyError, match=match):
        SitePolicy().check(request)
    SitePolicy.permissive(allow_real_init=False).check(request)  # a simulated site takes the run's settings


def test_time_limit_is_exposed_for_the_engine() -> None:
    """max_seconds is a plain policy value (None: no limit) for the distill engine to stop at."""
    assert SitePolicy().max_seconds is None and SitePolicy(max_seconds=90).max_seconds == 90


def test_policy_init_then_show(tmp_path: Path) -> None:
    """`policy init` writes the defaults (never over a file); `policy show` validates and explains it."""
    path = tmp_path / "policy.json"
    assert runner.invoke(app, ["policy", "init", "--path", str(path)]).exit_code == 0
    assert SitePolicy.from_file(path) == SitePolicy()
    again = runner.invoke(app, ["policy", "init", "--path", str(path)])
    assert isinstance(again.exception, ConfigError) and "already exists" in str(again.exception)
    shown = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert shown.exit_code == 0 and "require_approval" in shown.output and "mtt.max_syn_steps" in shown.output
    path.write_text('{"max_iterations": 0}')
    bad = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert isinstance(bad.exception, ConfigError) and "max_iterations" in str(bad.exception)
