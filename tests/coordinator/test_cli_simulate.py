"""`coordinator simulate`: its options and any other run-config key (--set) reach the simulation's run config."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import coordinator.simulate
from coordinator.cli import app
from shared.config import RunConfig

runner = CliRunner()


def test_set_passes_any_run_config_key_to_the_simulation(monkeypatch, tmp_path) -> None:
    seen: list[RunConfig] = []

    def fake(config: RunConfig, verbose: bool = False):
        seen.append(config)
        return tmp_path, {"sites_accepted": 3, "sites_expected": 3}

    monkeypatch.setattr(coordinator.simulate, "simulate", fake)
    result = runner.invoke(app, ["simulate", "--ipc", "3", "--set", "privacy-shadows=4", "--set",
                                 "require-approval=true", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = seen[0]
    assert (config.ipc, config.privacy_shadows, config.require_approval) == (3, 4, True)


@pytest.mark.parametrize(("item", "message"), [("no-such-key=1", "unknown run config key 'no-such-key'"),
                                                ("privacy-shadows", "expected key=value")])
def test_a_bad_set_is_refused_naming_it(monkeypatch, item: str, message: str) -> None:
    monkeypatch.setattr(coordinator.simulate, "simulate", lambda *a, **k: pytest.fail("must not run"))
    result = runner.invoke(app, ["simulate", "--set", item])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output
