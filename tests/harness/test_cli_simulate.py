"""`coordinator simulate`: its options and any other run-config key (--set) reach the simulation's run config."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import harness.simulate
from coordinator.cli import app
from coordinator.summary import RunStatus, RunSummary
from shared.config import RunConfig

runner = CliRunner()


def _summary(config: RunConfig) -> RunSummary:
    return RunSummary.begun(config, "run-1", RunStatus.COMPLETED).model_copy(update={"sites_accepted": config.sites})


def test_set_passes_any_run_config_key_to_the_simulation(monkeypatch, tmp_path) -> None:
    seen: list[RunConfig] = []

    def fake(config: RunConfig, verbose: bool = False):
        seen.append(config)
        return tmp_path, _summary(config)

    monkeypatch.setattr(harness.simulate, "simulate", fake)
    result = runner.invoke(app, ["simulate", "--ipc", "3", "--set", "privacy-shadows=4", "--set",
                                 "require-approval=true", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = seen[0]
    assert (config.ipc, config.privacy_shadows, config.require_approval) == (3, 4, True)


@pytest.mark.parametrize(("item", "message"), [("no-such-key=1", "unknown run config key 'no-such-key'"),
                                                ("privacy-shadows", "expected key=value")])
def test_a_bad_set_is_refused_naming_it(monkeypatch, item: str, message: str) -> None:
    monkeypatch.setattr(harness.simulate, "simulate", lambda *a, **k: pytest.fail("must not run"))
    result = runner.invoke(app, ["simulate", "--set", item])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output


def _capture(monkeypatch, tmp_path) -> list[RunConfig]:
    seen: list[RunConfig] = []

    def fake(config: RunConfig, verbose: bool = False):
        seen.append(config)
        return tmp_path, _summary(config)

    monkeypatch.setattr(harness.simulate, "simulate", fake)
    return seen


def test_a_config_file_sets_the_run_and_the_command_line_overrides_it(monkeypatch, tmp_path) -> None:
    """--config study.toml < options given on the command line < --set; unset options keep the file's values."""
    seen = _capture(monkeypatch, tmp_path)
    study = tmp_path / "study.toml"
    study.write_text('# the consortium\'s settings\nmethod = "dm"\nipc = 5\nsites = 4\ntrain-epochs = 40\n')
    result = runner.invoke(app, ["simulate", "--config", str(study), "--ipc", "7", "--set", "sites=5",
                                 "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = seen[0]
    assert (config.method.value, config.ipc, config.sites, config.train_epochs) == ("dm", 7, 5, 40)


@pytest.mark.parametrize(("text", "message"), [
    ("ipcs = 10\n", "unknown run config key 'ipcs'; did you mean 'ipc'?"),
    ("train-epoch = 10\n", "did you mean 'train-epochs'?"),
    ("ipc = \n", "is not valid TOML"),
    ("[run]\nipc = 10\n", "must be a plain value"),
    ("ipc = -1\n", "run config 'ipc'"),
])
def test_a_bad_config_file_is_refused_naming_the_key(monkeypatch, tmp_path, text: str, message: str) -> None:
    monkeypatch.setattr(harness.simulate, "simulate", lambda *a, **k: pytest.fail("must not run"))
    (tmp_path / "study.toml").write_text(text)
    result = runner.invoke(app, ["simulate", "--config", str(tmp_path / "study.toml")])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output


def test_help_lists_every_run_config_key_and_a_missing_file_is_named(monkeypatch, tmp_path) -> None:
    shown = " ".join(runner.invoke(app, ["simulate", "--help"], terminal_width=200).output.split())
    for key in ("privacy-shadows", "train-epochs", "require-approval", "node-wait-timeout"):
        assert key in shown
    result = runner.invoke(app, ["simulate", "--config", str(tmp_path / "nowhere.toml")])
    assert result.exit_code != 0 and "nowhere.toml' not found" in str(result.exception) + result.output
