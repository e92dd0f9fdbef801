"""Both command lines take --version and --log-level before any command."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

import shared.logs
from coordinator.cli import app as coordinator_app
from shared.logs import configure_logging
from site_agent.cli import app as site_app

runner = CliRunner()


@pytest.mark.parametrize("app", [site_app, coordinator_app], ids=["site-agent", "coordinator"])
def test_version_names_the_project_and_the_libraries_its_results_depend_on(app) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("feddistill ") and "flwr 1.41" in result.output and "torch " in result.output


@pytest.mark.parametrize("app", [site_app, coordinator_app], ids=["site-agent", "coordinator"])
def test_log_level_sets_our_loggers_and_refuses_an_unknown_level(app, monkeypatch) -> None:
    monkeypatch.setattr(shared.logs, "_chosen_level", None)  # restored afterwards: later tests log at info
    group = "sites" if app is coordinator_app else "policy"
    result = runner.invoke(app, ["--log-level", "warning", group, "--help"])
    assert result.exit_code == 0
    assert logging.getLogger("site_agent").level == logging.WARNING
    configure_logging()  # as the ServerApp and ClientApp call it inside an in-process simulation
    assert logging.getLogger("site_agent").level == logging.WARNING
    assert logging.getLogger("flwr").getEffectiveLevel() >= logging.WARNING
    bad = runner.invoke(app, ["--log-level", "loud", group, "--help"])
    assert bad.exit_code != 0 and "'loud' is not one of" in bad.output


def test_the_key_directory_has_one_name_on_both_command_lines_and_the_old_spelling_still_works(
    tmp_path, monkeypatch, capsys
) -> None:
    """--key-dir everywhere (site and coordinator); a script written with --keys-dir runs, with a note."""
    import sys

    from coordinator import cli as coordinator_cli

    for app, command in ((site_app, ["init"]), (coordinator_app, ["init"]), (coordinator_app, ["sites", "list"])):
        shown = runner.invoke(app, [*command, "--help"]).output
        assert "--key-dir" in shown and "--keys-dir" not in shown
    monkeypatch.setattr(sys, "argv", ["coordinator", "init", f"--keys-dir={tmp_path / 'keys'}"])
    with pytest.raises(SystemExit) as done:
        coordinator_cli.main()
    assert done.value.code in (0, None)
    assert "note: --keys-dir is now called --key-dir" in capsys.readouterr().err
    assert (tmp_path / "keys" / "coordinator.key").is_file()
