"""How every deployed Flower process of ours is started: offline-safe environment and TOML config files.

Both the SuperLink (``coordinator serve``) and each SuperNode (``site-agent join``) run with their own
``FLWR_HOME``, no update check, no telemetry, no runtime dependency installation (an offline hospital
network has no package index, and an install would pull torch), and bounded thread counts (two
processes each using every core slow each other down many times over).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from shared.errors import ConfigError

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

TomlScalar = str | int | float | bool


def flower_env(flwr_home: Path, threads: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower process: ``base`` (default: ours) plus FLWR_HOME, offline flags and threads."""
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARS})
    return env


def flower_executable(name: str) -> str:
    """The absolute path of one of Flower's programs (``flower-supernode``, ``flower-superlink``, ``flwr``).

    Looked up beside the running interpreter first, then on PATH: a venv's ``site-agent`` started by absolute
    path with the venv not activated (as systemd does) has the venv's ``bin/`` only beside its interpreter.

    Raises:
        ConfigError: the program is in neither place.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name!r} is neither beside this Python ({Path(sys.executable).parent}) nor on PATH",
                          hint="install this package in the environment that runs it (it depends on flwr)")
    return found


def toml_value(value: TomlScalar) -> str:
    """One TOML scalar. JSON string escapes are valid TOML basic-string escapes, so quoting is exact."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else ("nan" if math.isnan(value) else repr(value))
    return json.dumps(str(value), ensure_ascii=False)


def write_flat_toml(path: Path, values: Mapping[str, TomlScalar]) -> Path:
    """Write ``key = value`` lines (Flower's ``--node-config``/``--run-config`` file form); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in values.items()))
    return path


def dump_toml(data: Mapping[str, object], prefix: str = "") -> str:
    """TOML for nested tables of scalars and scalar lists (enough for Flower's ``config.toml``)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    for key, value in scalars.items():
        text = "[" + ", ".join(toml_value(v) for v in value) + "]" if isinstance(value, list) else toml_value(value)
        lines.append(f"{_toml_key(key)} = {text}")
    text = "\n".join(lines) + ("\n\n" if lines else "")
    for key, table in tables.items():
        text += dump_toml(table, f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key))
    return text


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)
