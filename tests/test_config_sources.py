"""RunConfig is the one source of the run's settings: its sections and help text, and every copy checked against it.

The copies are pyproject's ``[tool.flwr.app.config]`` (keys, defaults, section headings), the options of
``coordinator run`` and ``coordinator simulate`` that set a run-config key (name, default, help text) and
the study's settings that mean the same thing (``StudyConfig``: help text, default, bounds).
"""

from __future__ import annotations

import re
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from coordinator.cli import app
from harness.study.plan import StudyConfig
from shared.config import RunConfig, Section, SiteRunConfig
from shared.errors import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
# Options spelled otherwise than their key, and why.
_FLAGS = {"keys_dir": "--key-dir"}  # every command of the coordinator calls its key directory --key-dir
# Options that share a key's name but set something else.
_NOT_THE_KEY = {("run", "resume")}  # a stopped run's folder: it sets resume and run-dir together
# Options with no default, and why: an operator must name a path on the SuperLink host.
_REQUIRED = {("run", "keys_dir"), ("run", "out_dir")}
# Study settings that mean what the run-config key means, with another default, or in another sense.
_STUDY_DEFAULTS = {"rounds": 3, "out_dir": "results/study"}  # each pooled arm reports rounds 1 and 3
_STUDY_OWN_MEANING = {"out_dir"}  # the parent of the study's folder, not of one run's


def test_every_key_has_a_section_and_help_text() -> None:
    for name, info in RunConfig.model_fields.items():
        assert RunConfig.section_of(name) in Section, name
        assert info.description and info.description.endswith("."), name  # a sentence, shown in --help


def test_the_site_section_is_what_a_site_parses_and_nothing_of_the_coordinators() -> None:
    """SiteRunConfig holds exactly the site keys; it ignores the coordinator's keys, even one it has never seen."""
    assert set(SiteRunConfig.model_fields) == {k.replace("-", "_") for k in RunConfig.keys_in(Section.SITE)}
    run = RunConfig(ipc=3, method="dm", match="mmd", node_wait_timeout=5.0, keys_dir="/keys")
    sent = {**run.to_flower(), "a-key-added-later": 1}
    assert SiteRunConfig.from_flower(sent) == run.site_part()
    assert run.site_part().distill_config() == run.distill_config()
    with pytest.raises(ConfigError, match="'ipc'"):
        SiteRunConfig.from_flower({"ipc": 0, "keys-dir": "/keys"})
    with pytest.raises(ConfigError, match="only dm and idm match embeddings"):
        SiteRunConfig.from_flower({"method": "dc", "match": "mmd"})


def test_pyproject_lists_each_key_under_its_sections_heading() -> None:
    """[tool.flwr.app.config] holds every key with RunConfig's default, grouped under a '# <section>:' comment."""
    text = PYPROJECT.read_text()
    assert tomllib.loads(text)["tool"]["flwr"]["app"]["config"] == RunConfig().to_flower()
    table = text.split("[tool.flwr.app.config]\n", 1)[1].split("\n[", 1)[0]
    section, seen = None, {}
    for line in table.splitlines():
        if heading := re.match(r"# (\w+):", line):
            section = Section(heading[1])
        elif key := re.match(r"([a-z0-9-]+) = ", line):
            seen[key[1]] = section
    assert seen == {key: RunConfig.section_of(key) for key in RunConfig.to_flower(RunConfig())}


def _run_config_options() -> list[tuple[str, click.Parameter]]:
    return [(command, param) for command in ("run", "simulate") for param in _COMMANDS[command].params
            if param.name in RunConfig.model_fields and (command, param.name) not in _NOT_THE_KEY]


@pytest.mark.parametrize(("command", "param"), _run_config_options(), ids=lambda v: getattr(v, "name", v))
def test_each_option_that_sets_a_key_is_named_defaulted_and_explained_as_the_key(command: str,
                                                                                  param: click.Parameter) -> None:
    """`--ipc` sets ipc: its flag is the key's, its default RunConfig's, and its help RunConfig's description."""
    name = param.name
    assert name is not None and isinstance(param, click.Option)
    assert param.opts == [_FLAGS.get(name, "--" + name.replace("_", "-"))]
    if (command, name) in _REQUIRED:
        assert param.required
    else:
        assert _plain(param.default) == _plain(getattr(RunConfig(), name))
    assert (param.help or "").startswith(RunConfig.description(name)), (param.help, RunConfig.description(name))


def test_the_options_cover_the_keys_a_newcomer_sets_most() -> None:
    """Both commands take the request's main knobs as options; the rest go through --set."""
    for command in ("run", "simulate"):
        names = {param.name for param in _COMMANDS[command].params}
        assert {"dataset", "method", "ipc", "iterations", "epsilon", "delta", "sites", "min_sites"} <= names


def _bounds(info: FieldInfo) -> dict[str, float]:
    """A field's bounds by kind: ge, gt, le, lt."""
    kinds = {Ge: "ge", Gt: "gt", Le: "le", Lt: "lt"}
    return {kinds[type(m)]: getattr(m, kinds[type(m)]) for m in info.metadata if type(m) in kinds}


@pytest.mark.parametrize("name", sorted(set(StudyConfig.model_fields) & set(RunConfig.model_fields)))
def test_a_study_setting_named_as_a_key_means_the_key(name: str) -> None:
    """Same type and help text; the same default unless listed; and no value the run config would refuse."""
    study, run = StudyConfig.model_fields[name], RunConfig.model_fields[name]
    assert study.annotation == run.annotation
    if name not in _STUDY_OWN_MEANING:
        assert study.description == run.description
    assert study.default == _STUDY_DEFAULTS.get(name, run.default)
    within, limits = _bounds(study), _bounds(run)
    for kind, limit in limits.items():
        lower = kind in ("ge", "gt")
        tighter = [v for k, v in within.items() if (k in ("ge", "gt")) == lower]
        assert tighter and all(v >= limit if lower else v <= limit for v in tighter), (name, kind, within)


@pytest.mark.parametrize(("command", "extra"), [("simulate", []), ("run", ["--key-dir", "/k", "--out-dir", "/o"])])
def test_an_unknown_set_key_points_at_the_help_of_the_command_running(monkeypatch, command: str,
                                                                      extra: list[str]) -> None:
    """`coordinator simulate --set nope=1` says `coordinator simulate --help` lists the keys, not `run`'s."""
    import harness.simulate

    monkeypatch.setattr(harness.simulate, "simulate", lambda *a, **k: pytest.fail("must not run"))
    result = CliRunner().invoke(app, [command, *extra, "--set", "train-epoch=5"], prog_name="coordinator")
    assert isinstance(result.exception, ConfigError), result.output
    assert "did you mean 'train-epochs'?" in str(result.exception)
    assert result.exception.hint == f"`coordinator {command} --help` lists every key"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
