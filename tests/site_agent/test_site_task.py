"""The process that answers one message at a site: refuses unpinned packages, and never runs a package's code.

Also guards the few Flower internals ``site_agent.flower_runtime`` wraps: if a Flower upgrade renames or
reshapes one, this file fails first, naming it.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.fab import Fab
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from site_agent import app_pins, audit, flower_runtime, task
from site_agent.audit import AuditEvent
from tests.site_agent.test_app_pins import fab

# A package that would, if any of its code ran at the site, leave a file behind and answer with raw images.
HOSTILE_CLIENT_APP = b"""
import pathlib
pathlib.Path(__import__("os").environ["HOSTILE_MARKER"]).write_text("ran")
raise SystemExit("hostile code ran")
"""


def task_input(tmp_path: Path, package: bytes, message_type: str = "evaluate") -> flower_runtime.TaskInput:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 42, 7  # as pulling a task sets them
    message = Message(RecordDict(), dst_node_id=7, message_type=message_type)
    message.metadata.__dict__["_message_id"] = message.object_id  # as Flower sets it on pull
    node_config = {"site-id": "site-0", "key-dir": str(tmp_path / "keys"), "cache-dir": str(tmp_path / "cache")}
    context = Context(run_id=42, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    run = Run.create_empty(42)
    return flower_runtime.TaskInput(message, context, run, Fab(hashlib.sha256(package).hexdigest(), package, {}))


def test_an_unpinned_run_is_refused_with_a_reason_and_audited(tmp_path: Path) -> None:
    package = fab()
    reply = task.handle(task_input(tmp_path, package))
    assert reply.has_error() and "has not pinned the run's app package" in reply.error.reason
    [entry] = audit.read_entries(tmp_path / "cache")
    assert entry.event == AuditEvent.APP_REFUSED and entry.run_id == "flower-run-42"
    assert entry.details["fab_hash"] == hashlib.sha256(package).hexdigest()


def test_a_pinned_package_is_answered_by_the_installed_site_agent_never_by_its_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "hostile-ran"
    monkeypatch.setenv("HOSTILE_MARKER", str(marker))
    package = fab(extra={"site_agent/client_app.py": HOSTILE_CLIENT_APP, "site_agent/__init__.py": b""})
    app_pins.pin(tmp_path / "keys", hashlib.sha256(package).hexdigest())
    reply = task.handle(task_input(tmp_path, package))
    # The installed ClientApp answered: an evaluate message without its request is refused by our own parser.
    assert reply.has_error() and "carries no EvaluateRequest" in reply.error.reason
    assert not marker.exists()
    installed = Path(sys.modules["site_agent.client_app"].__file__).resolve()
    assert installed == (Path(task.__file__).parent / "client_app.py").resolve()
    assert not any(str(tmp_path) in entry for entry in sys.path)


@pytest.mark.parametrize("name, expected", [
    ("pull_task_input", ["client"]),
    ("push_message", ["client", "message", "context"]),
    ("push_task_output", ["client", "context", "sub_status", "details"]),
])
def test_the_flower_runtime_functions_we_call_keep_their_signatures(name: str, expected: list[str]) -> None:
    function = getattr(flower_runtime, name)  # imported there from flwr.supernode.runtime.run_clientapp
    assert list(inspect.signature(function).parameters) == expected, f"flwr changed {name}: see site_agent/flower_runtime.py"


def test_the_flower_runtime_types_we_use_keep_their_shape() -> None:
    assert flower_runtime.CLIENT_APP_TASK == "flwr-clientapp"
    assert {"hash_str", "content"} <= set(inspect.signature(Fab).parameters)
    assert {"run_id", "fab_id", "fab_version", "fab_hash"} <= set(inspect.signature(Run).parameters)
    client = flower_runtime.RuntimeHttpClient
    for method in ("AcquireTask", "PullTaskInput", "PullMessages", "PushMessages", "PushTaskOutput",
                   "SendTaskHeartbeat"):
        assert hasattr(client, method), f"flwr's RuntimeHttpClient lost {method}: see site_agent/flower_runtime.py"
    assert "master_secret" in inspect.signature(flower_runtime.SuperExecAuthHttpInterceptor).parameters


def test_a_node_config_without_its_keys_is_refused_before_anything_of_the_run(tmp_path: Path) -> None:
    """No key directory, no pins to read: the message is refused, not answered from some other folder's pins."""
    incomplete = task_input(tmp_path, fab())
    incomplete.context.node_config.pop("key-dir")
    reply = task.handle(incomplete)
    assert reply.has_error() and "key-dir" in reply.error.reason
