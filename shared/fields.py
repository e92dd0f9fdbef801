"""The building blocks every message model uses: the ids a sender chooses, strict models, and errors that
name a field without echoing the sender's value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError
from shared.untrusted import untrusted_text

SCHEMA_VERSION = 1

# A site id names files and appears in logs and reports: letters, digits, '.', '_' and '-' only.
SITE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN)]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # nonces, SHA-256 digests, key fingerprints
# What the coordinator names reaches a site's terminal, log and audit log, so it is one plain word: a letter
# or digit, then letters, digits, '.', '_' and '-'. A run id is the coordinator's run folder's name
# (``run-7``, ``breastmnist-dm-ipc10-20260101-120000``); a dataset is a MedMNIST flag (``breastmnist``).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
RunId = Annotated[str, Field(pattern=RUN_ID_PATTERN)]
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DatasetName = Annotated[str, Field(pattern=DATASET_PATTERN)]


def is_site_id(text: str) -> bool:
    return re.fullmatch(SITE_ID_PATTERN, text) is not None


def is_run_id(text: str) -> bool:
    """Whether ``text`` may name a run: a coordinator checks its run folder's name with it before asking any site."""
    return re.fullmatch(RUN_ID_PATTERN, text) is not None


def first_problem(exc: ValidationError) -> str:
    """One line naming the first invalid field, without echoing its (untrusted) value."""
    error = exc.errors()[0]
    location = untrusted_text(".".join(str(part) for part in error["loc"]) or "(root)", 100)  # a key can be the sender's
    return f"field {location!r}: {untrusted_text(error['msg'], 200)}"  # some messages quote the value's start


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean '<prefix><nearest>'?"`` for the known name closest to a mistyped one (difflib), or ``""``."""
    nearest = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {prefix + nearest[0]!r}?" if nearest else ""


def settings_problem(exc: ValidationError, model: type[BaseModel]) -> str:
    """:func:`first_problem` for a settings file read into ``model``, but an unknown key (most often a typo) is named
    with the nearest field of the (nested) model it was found in, instead of pydantic's wording: for
    ``{"mtt": {"max_syn_step": 0}}``, "unknown key 'mtt.max_syn_step'; did you mean 'mtt.max_syn_steps'?".
    """
    error = exc.errors()[0]
    if error["type"] != "extra_forbidden" or not error["loc"]:
        return first_problem(exc)
    *parents, key = [str(part) for part in error["loc"]]
    for parent in parents:  # down to the model that holds the unknown key
        inner = model.model_fields[parent].annotation if parent in model.model_fields else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return first_problem(exc)
        model = inner
    prefix = "".join(f"{parent}." for parent in parents)
    return f"unknown key {untrusted_text(prefix + key, 100)!r}" + did_you_mean(key, model.model_fields, prefix)


def setting_error(exc: ValidationError, template: str) -> ConfigError:
    """A ConfigError naming the first bad setting in kebab-case: ``template`` holds ``{key}`` and ``{msg}``.

    E.g. ``"option --{key}: {msg}"`` for command-line options, ``"run config {key!r}: {msg}"`` for Flower's.
    """
    error = exc.errors()[0]
    key = str(error["loc"][0]).replace("_", "-") if error["loc"] else "(root)"
    return ConfigError(template.format(key=key, msg=error["msg"]))


class StrictModel(BaseModel):
    """Unknown fields are refused and values are frozen: a model parsed at a trust boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)



Count = Annotated[int, Field(ge=0, le=10**9)]  # a count of images: bounded, so sums stay exact and small
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=10**7, allow_inf_nan=False)]
