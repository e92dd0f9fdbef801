"""Fixtures for the coordinator's tests against fake grids."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity

from coordinator import messaging


@pytest.fixture
def fast_polling(monkeypatch) -> None:
    """Poll a fake grid every 10 ms, stamping messages with a task identity as ``run_simulation`` sets it up."""
    monkeypatch.setattr(messaging, "_POLL_SECONDS", 0.01)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
