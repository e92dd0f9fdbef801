"""A site scores models for a run only as often as its policy allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import PolicyError
from site_agent.budget import spend_evaluation


def test_evaluations_beyond_the_cap_are_refused_per_run(tmp_path: Path) -> None:
    """The third evaluation of a run with a cap of two is refused; another run has its own count."""
    assert spend_evaluation(tmp_path, "run-a", 2) == 1
    assert spend_evaluation(tmp_path, "run-a", 2) == 2
    with pytest.raises(PolicyError, match="2 evaluations"):
        spend_evaluation(tmp_path, "run-a", 2)
    assert spend_evaluation(tmp_path, "run-b", 2) == 1


def test_the_count_survives_a_new_process(tmp_path: Path) -> None:
    """The count lives in the site's cache, not in memory (deployed ClientApps run one process per message)."""
    spend_evaluation(tmp_path, "../../etc/passwd", 1)
    assert list((tmp_path / "evaluations").iterdir())  # stored under a hash, inside the cache
    with pytest.raises(PolicyError):
        spend_evaluation(tmp_path, "../../etc/passwd", 1)
