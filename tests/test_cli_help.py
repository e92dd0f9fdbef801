"""At 80 columns every command's --help shows each option's names whole, on both command lines."""

from __future__ import annotations

import click
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from coordinator.cli import app as coordinator_app
from site_agent.cli import app as site_app

runner = CliRunner()


def _commands(app: typer.Typer) -> list[tuple[list[str], click.Command]]:
    """Every command and group under ``app``, with the words that reach it."""
    found: list[tuple[list[str], click.Command]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


@pytest.mark.parametrize("app", [site_app, coordinator_app], ids=["site-agent", "coordinator"])
def test_help_at_80_columns_shows_option_names_whole(app: typer.Typer) -> None:
    for path, command in _commands(app):
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
        words = shown.split()
        names = [name for param in command.params if not getattr(param, "hidden", False)
                 for name in (*param.opts, *param.secondary_opts) if name.startswith("-")]
        cut = [name for name in names if name not in (word.rstrip(",") for word in words)]
        assert not cut, f"{' '.join(path)} --help lacks {cut}"
        assert "…" not in shown and "\\[" not in shown, " ".join(path)
        assert max(map(len, shown.splitlines())) <= 80, " ".join(path)
