"""A settings file's unknown key is named with the nearest valid one, at any depth (shared.fields)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.fields import did_you_mean, settings_problem


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = 1


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_ipc: int = 1
    inner: _Inner = _Inner()


@pytest.mark.parametrize(("values", "problem"), [
    ({"max_ipcs": 1}, "unknown key 'max_ipcs'; did you mean 'max_ipc'?"),
    ({"inner": {"max_step": 1}}, "unknown key 'inner.max_step'; did you mean 'inner.max_steps'?"),
    ({"zzz": 1}, "unknown key 'zzz'"),
    ({"max_ipc": "many"}, "field 'max_ipc': Input should be a valid integer"),  # not a typo: pydantic's reason
])
def test_settings_problem_names_the_nearest_key(values: dict, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _Settings.model_validate(values)
    assert settings_problem(caught.value, _Settings).startswith(problem)


def test_did_you_mean_guesses_only_when_close() -> None:
    assert did_you_mean("ipcs", ["ipc", "seed"]) == "; did you mean 'ipc'?"
    assert did_you_mean("colour", ["ipc", "seed"]) == ""
