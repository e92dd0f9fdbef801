"""Which part may import which: the design rule, checked on every import statement (module level or not).

``shared`` is imported by both sides and imports neither; the coordinator never touches a site's code and a
hospital runs no coordinator code; the harness, which plays every party on one machine, imports both and
is imported by neither. The app package every site receives holds none of the harness.
"""

from __future__ import annotations

import ast
import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

PROJECT = Path(__file__).resolve().parents[1]
PARTS = ("shared", "site_agent", "coordinator", "harness")
MAY_NOT_IMPORT = {
    "shared": {"site_agent", "coordinator", "harness"},
    "site_agent": {"coordinator", "harness"},
    "coordinator": {"site_agent", "harness"},
    "harness": set(),
}


def imported_parts(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in a file that names one of our parts."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in PARTS}
    return found


@pytest.mark.parametrize("part", PARTS)
def test_no_import_arrow_runs_the_wrong_way(part: str) -> None:
    wrong = [f"{path.relative_to(PROJECT)}:{line} imports {name}"
             for path in sorted((PROJECT / part).rglob("*.py"))
             for name, line in sorted(imported_parts(path)) if name in MAY_NOT_IMPORT[part]]
    assert wrong == []


def test_the_rule_would_catch_an_arrow(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from harness.sites import split_shares\nimport coordinator.cli\n")
    assert imported_parts(module) == {("harness", 2), ("coordinator", 3)}


def test_the_app_package_holds_no_harness_code() -> None:
    """What `coordinator run` submits, and every SuperNode stores: the three packages of a deployment."""
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(PROJECT))).namelist()
    assert not [name for name in names if name.startswith("harness/")]
    assert {name.split("/")[0] for name in names if "/" in name and not name.startswith(".info/")} == {
        "shared", "site_agent", "coordinator"}
