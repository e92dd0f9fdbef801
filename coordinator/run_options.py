"""A run's settings from the command line: named options, a ``--config`` TOML file and ``--set key=value``.

Precedence, lowest first: RunConfig's defaults, the config file, the options given on the command
line, then ``--set``. Every key is a run-config key in kebab case (``train-epochs``), as Flower's
run config and ``--set`` spell them; a mistyped key is refused with the nearest valid one.
"""

from __future__ import annotations

import math
import textwrap
import tomllib
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from click.core import ParameterSource

from shared.config import RunConfig, Section
from shared.errors import ConfigError
from shared.methods import DistillMethod
from shared.schemas import PartitionScheme

if TYPE_CHECKING:  # only pooled_line's argument: the options load without the run's modules
    from coordinator.summary import RunSummary

RunValue = str | int | float | bool


def config_keys() -> list[str]:
    """Every run-config key, as ``--config`` files and ``--set`` spell it."""
    return sorted(name.replace("_", "-") for name in RunConfig.model_fields)


def keys_epilog() -> str:
    """The ``--help`` epilog of a command that takes ``--set`` and ``--config``: the keys, by section.

    Wrapped here, between keys, and marked for click not to rewrap (``\\b``): its wrapping splits keys at hyphens.
    """
    lines = ["Run-config keys for --set key=value and --config FILE (a TOML file of key = value lines), by section:",
             "", "\b"]
    for section in Section:
        lines += textwrap.wrap(f"{section.value}: {', '.join(RunConfig.keys_in(section))}.", width=78,
                               break_on_hyphens=False, break_long_words=False, subsequent_indent="  ")
    return "\n".join(lines)


def about(key: str, then: str = "") -> str:
    """The ``--help`` text of an option that sets run-config ``key``: RunConfig's description of it, then ``then``."""
    return f"{RunConfig.description(key)} {then}".strip()


def run_option(key: str, *flags: str, then: str = "") -> Any:
    """A typer option that sets run-config ``key`` (``flags`` when it is not spelled ``--key``), its help :func:`about`."""
    return typer.Option(*flags, help=about(key, then))


def read_config_file(path: Path) -> dict[str, RunValue]:
    """The flat ``key = value`` table of a run-config TOML file.

    Raises:
        ConfigError: the file is missing, is not TOML, or holds a table or list where a value belongs.
    """
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config file {str(path)!r} is not valid TOML: {exc}") from None
    for key, value in values.items():
        if not isinstance(value, RunValue):
            raise ConfigError(f"--config file {str(path)!r}: {key!r} must be a plain value, not a "
                              f"{type(value).__name__}", hint="the file is flat: one `key = value` per line")
    return values


def parse_settings(items: list[str]) -> dict[str, RunValue]:
    """``key=value`` run-config overrides, values read as TOML (so 50 is an int and true a bool).

    Raises:
        ConfigError: an item has no ``=``.
    """
    parsed: dict[str, RunValue] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            parsed[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            parsed[key.strip()] = raw
    return parsed


def merged_run_values(
    ctx: click.Context, options: dict[str, Any], config_file: Path | None, settings: list[str] | None
) -> dict[str, RunValue]:
    """Run-config values (kebab case) from the options (snake case), the config file and ``--set``.

    Raises:
        ConfigError: the config file or a ``--set`` item is malformed.
    """
    given, defaults = {}, {}
    for name, value in options.items():
        from_command_line = ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        (given if from_command_line else defaults)[name.replace("_", "-")] = _plain(value)
    from_file = read_config_file(config_file) if config_file is not None else {}
    return {**defaults, **from_file, **given, **parse_settings(settings or [])}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


# Options shared by `coordinator run` and the simulation harness's commands: each help text is RunConfig's.
DatasetOption = Annotated[str, run_option("dataset")]
MinSitesOption = Annotated[int, run_option("min-sites")]
MethodOption = Annotated[DistillMethod, run_option("method")]
IpcOption = Annotated[int, run_option("ipc")]
IterationsOption = Annotated[int, run_option("iterations")]
EpsilonOption = Annotated[float, run_option("epsilon")]
DeltaOption = Annotated[float, run_option("delta")]
DataRootOption = Annotated[str, run_option("data-root")]
PartitionOption = Annotated[PartitionScheme, run_option("partition")]
AlphaOption = Annotated[float, run_option("alpha")]
ConfigFileOption = Annotated[Path | None, typer.Option("--config", help="A TOML file of run-config keys (key = value, listed below); options on the command line and --set override it.")]
SettingOption = Annotated[list[str] | None, typer.Option("--set", help="Any run-config key (listed below), e.g. --set train-epochs=50; overrides the rest.")]


def pooled_line(summary: RunSummary) -> str:
    """The global model's pooled figures, as one line: balanced accuracy and AUC first, the weakest class's recall."""
    glob = summary.global_model
    if glob is None:
        return "the global model was not scored"
    recalls = [(r, name) for r, name in zip(glob.recall, glob.class_names, strict=False)
               if r is not None and not math.isnan(r)]  # NaN: a class with no test image
    lowest = min(recalls, default=None)
    weakest = f"; lowest class recall {fmt(lowest[0])} ({lowest[1]})" if lowest else ""
    return (f"global model over {glob.num_examples} test images: balanced accuracy "
            f"{fmt(glob.balanced_accuracy)}, AUC {fmt(glob.auc)}{weakest} (accuracy "
            f"{fmt(glob.accuracy)}; majority class {fmt(glob.majority_rate)})")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
