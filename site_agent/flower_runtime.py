"""The few pieces of Flower's internal Runtime API that the site's own task runner needs, in one place.

With ``flower-supernode --isolation process`` the SuperNode runs no app code: it queues each message
and waits for an executor on this machine to acquire the task over its local Runtime API. Flower's
own executor (``flower-superexec`` → ``flwr-clientapp``) installs the run's app package (FAB) and imports
the ClientApp from it; ours (``site_agent.task_runner`` → ``site_agent.task``) does every step of that
except those two, and runs the ClientApp this hospital installed instead.

These names are Flower internals (flwr 1.41, ``supernode/runtime/run_clientapp.py`` and
``supercore/superexec/run_superexec.py`` show the same steps). ``tests/site_agent/test_flower_runtime.py``
checks each one still exists with the signature used here, so a Flower upgrade fails loudly there.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import Context, Message
from flwr.common.constant import SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

CLIENT_APP_TASK = TaskType.CLIENT_APP.value
_ACQUIRE = "/flwr.proto.Runtime/AcquireTask"  # the one call Flower signs with the executor's shared secret


@dataclass(frozen=True)
class TaskInput:
    """What the SuperNode hands the process that runs one message: the message and the run it belongs to."""

    message: Message
    context: Context
    run: Run
    fab: Fab


def executor_client(address: str, secret: bytes) -> RuntimeHttpClient:
    """A client of the SuperNode's local Runtime API that may acquire tasks (signed with the shared secret)."""
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                      SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={_ACQUIRE})],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def acquire_client_app_task(client: RuntimeHttpClient) -> str | None:
    """The token of the next ClientApp task waiting at the SuperNode, or None when there is none."""
    answer = client.AcquireTask(AcquireTaskRequest(supported_task_types=[CLIENT_APP_TASK]))
    if answer.HasField("task") and answer.token and answer.task.type == CLIENT_APP_TASK:
        return answer.token
    return None


def task_client(address: str, token: str) -> RuntimeHttpClient:
    """A client of the SuperNode's local Runtime API for the one task ``token`` names."""
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def start_heartbeat(client: RuntimeHttpClient) -> HeartbeatSender:
    """Tell the SuperNode, until stopped, that the task is alive (it expires tasks that go quiet)."""
    sender = HeartbeatSender(make_task_heartbeat_fn_http(client))
    sender.start()
    return sender


def pull_task(client: RuntimeHttpClient) -> TaskInput:
    """The task's message, context, run and app package (the FAB's bytes: read, never installed here)."""
    return TaskInput(*pull_task_input(client))


def push_reply(client: RuntimeHttpClient, reply: Message, context: Context) -> None:
    """Send the reply message (through the SuperNode, to the SuperLink)."""
    push_message(client, reply, context)


def push_outcome(client: RuntimeHttpClient, context: Context | None, completed: bool, details: str = "") -> None:
    """Report the task finished (or failed) and hand back its context, as Flower's own ClientApp process does."""
    push_task_output(client=client, context=context,
                     sub_status=SubStatus.COMPLETED if completed else SubStatus.FAILED, details=details)
