"""Logging and error reporting for the command-line tools: our packages at INFO, others at WARNING."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Annotated

import click
import typer

from shared.errors import FedDistillError

OUR_PACKAGES = ("shared", "site_agent", "coordinator")


LOG_LEVELS = ("debug", "info", "warning", "error")


_chosen_level: str | None = None  # the command line's --log-level, which later calls in the process keep


def configure_logging(verbose: bool = False, level: str | None = None) -> None:
    """Our packages at ``level`` (default: the command line's ``--log-level``, else info; DEBUG when ``verbose``);
    everything else (Flower, Ray) at WARNING unless debug."""
    level = level or _chosen_level or "info"
    ours = logging.DEBUG if verbose else getattr(logging, level.upper())
    logging.basicConfig(level=logging.DEBUG if ours == logging.DEBUG else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for name in OUR_PACKAGES:
        logging.getLogger(name).setLevel(ours)
    # Flower sets its own logger to DEBUG on import (so call this again once flwr is imported); in our processes
    # it speaks only at WARNING and up, through its own console handler alone, not twice (also through ours).
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.DEBUG if ours == logging.DEBUG else logging.WARNING)
    flower.propagate = ours == logging.DEBUG or not flower.handlers


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FLOWER_LEVEL = re.compile(r"^\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*:\s*(.*)$")


def readable_flower_line(line: str, lowest: int = logging.INFO) -> str | None:
    """A line of a Flower process's output (a SuperNode's, ``flwr log``'s) as a person wants it: colour codes
    gone; None for Flower's empty ``INFO :`` separators and for its lines below ``lowest``. Lines without
    Flower's ``LEVEL :`` prefix (ours carry a timestamp first, tracebacks none) always pass."""
    plain = _ANSI.sub("", line.rstrip("\n"))
    level = _FLOWER_LEVEL.match(plain)
    if level is None:
        return plain
    if not level[2].strip() or getattr(logging, level[1]) < lowest:
        return None
    return plain


def chosen_level() -> int:
    """The level the command line's ``--log-level`` chose (INFO when none was given)."""
    return getattr(logging, (_chosen_level or "info").upper())


def versions() -> str:
    """This project's version and those of the libraries its results depend on (as manifests record them)."""
    from shared.software import software_versions

    v = software_versions()
    return f"feddistill {v['feddistill']} (flwr {v['flwr']}, torch {v['torch']}, medmnist {v['medmnist']})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit()


def common_options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the versions and exit.")] = False,
    log_level: Annotated[str, typer.Option(
        click_type=click.Choice(LOG_LEVELS), help="Our log lines at this level and above; 'debug' also shows "
        "Flower's and Ray's own.")] = "info",
) -> None:
    """``--version`` and ``--log-level``, taken before any command (an app's callback)."""
    global _chosen_level
    _chosen_level = log_level
    configure_logging()


def add_common_options(app: typer.Typer) -> None:
    """Give a command-line app ``--version`` and ``--log-level``, and plain help for it and every command under it.

    Plain (click's) help lays each option out as a name line and wrapped text, so at 80 columns option names
    and words stay whole; Rich's help tables cut them (``--root-certifica…``) once a command has long names,
    choices and ``--x/--no-x`` pairs. Typer passes an app's markup mode down to all its sub-apps and commands.
    """
    app.rich_markup_mode = None
    app.callback()(common_options)


# Typer escapes the brackets of "[default: ...]" for Rich whenever Rich is installed, even for plain help, which
# then shows "\[default: ...]" (fastapi/typer#1058, fix pending in #1089). Our apps use plain help only, and
# their errors are printed plainly anyway (pretty_exceptions_enable=False): tell Typer's help not to use Rich.
typer.core.HAS_RICH = False


def run_cli(app: Callable[[], object], renamed: dict[str, str] | None = None) -> None:
    """Run a command-line app (its callback sets up logging): our errors as one clear message, exit code 1.

    ``renamed`` maps an option's old name to its new one: the old spelling still works, with a note, so
    scripts written before the rename keep running while ``--help`` shows one name per thing.
    """
    sys.argv[1:] = [_new_name(arg, renamed or {}) for arg in sys.argv[1:]]
    try:
        app()
    except FedDistillError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        sys.exit(1)


def _new_name(arg: str, renamed: dict[str, str]) -> str:
    old, sep, value = arg.partition("=")
    if old not in renamed:
        return arg
    print(f"note: {old} is now called {renamed[old]}", file=sys.stderr)
    return renamed[old] + sep + value
