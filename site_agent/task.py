"""One message at a hospital, in a process of its own: ``python -m site_agent.task --runtime-api-address A --token T``.

``site_agent.task_runner`` starts one per message the SuperNode queues. The steps are those of Flower's
``flwr-clientapp`` (pull the task, run the ClientApp, push the reply and the outcome) with two changes
that make the site's protections the site's own:

1. Before anything of the run's app package (FAB) is read, its SHA-256 must be pinned by this site and
   the package must declare this site agent's app and version (``site_agent.app_pins``). Otherwise the
   coordinator gets a refusal with the reason, and the site's audit log records the hash and the run.
2. The message is handled by the ClientApp *installed here* (``site_agent.client_app.app``), never by
   code from the FAB: nothing of it is installed, put on ``sys.path`` or imported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from shared.errors import FedDistillError
from shared.logs import configure_logging
from site_agent import audit, flower_runtime
from site_agent.app_pins import AppRefused, load_pins, verify_app
from site_agent.audit import AuditEvent
from site_agent.settings import site_settings

log = logging.getLogger(__name__)


class _Run:
    """What an audit entry about a refused run names: Flower's run id (a refused run has no request of ours)."""

    def __init__(self, run_id: int) -> None:
        self.run_id, self.nonce = f"flower-run-{run_id}", ""


def handle(task: flower_runtime.TaskInput) -> Message:
    """The reply to one task: a refusal when this site does not serve the run's app, else the installed app's."""
    try:
        settings = site_settings(task.context.node_config)  # the node config join wrote: keys, cache, policy
        pinned = verify_app(task.fab.content, task.fab.hash_str, load_pins(settings.key_dir))
    except AppRefused as exc:
        audit.record(settings.cache_dir, AuditEvent.APP_REFUSED, _Run(task.run.run_id), "site-agent",
                     fab_hash=hashlib.sha256(task.fab.content).hexdigest(), fab_id=str(task.run.fab_id)[:100],
                     message_type=str(task.message.metadata.message_type)[:64], why=str(exc))
        log.warning("refused a message of Flower run %d: %s", task.run.run_id, exc)
        return _error_reply(task.message, exc)
    except FedDistillError as exc:  # a bad node config, policy or pins file: refused before anything of the run
        log.error("refused a message of Flower run %d: %s", task.run.run_id, exc.diagnostics())
        return _error_reply(task.message, exc)
    log.debug("run %d uses pinned app package %s", task.run.run_id, pinned.fab_hash)
    from site_agent.client_app import app  # the installed ClientApp, imported only once the run is allowed

    try:
        return app(message=task.message, context=task.context)
    except Exception as exc:  # noqa: BLE001 - any ClientApp error travels as Flower's would (the coordinator reads it)
        return _error_reply(task.message, exc)


def _error_reply(message: Message, exc: Exception) -> Message:
    # In the words Flower's own ClientApp process gives an exception; the coordinator reads it as one sentence.
    reason = str(type(exc)) + ":<'" + str(exc) + "'>"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def run_task(address: str, token: str) -> int:
    """Pull the task ``token`` names, answer it, push the reply and the outcome; returns the exit status."""
    client = flower_runtime.task_client(address, token)
    heartbeat = flower_runtime.start_heartbeat(client)
    context: Context | None = None
    completed, details = False, "the site agent failed before answering"
    try:
        task = flower_runtime.pull_task(client)
        context = task.context
        reply = handle(task)
        flower_runtime.push_reply(client, reply, context)
        completed, details = not reply.has_error(), "" if not reply.has_error() else "refused or failed at the site"
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the outcome is pushed whatever failed; Flower's
        # heartbeat ends a cancelled task with SIGINT
        log.error("task failed: %s", exc if isinstance(exc, FedDistillError) else type(exc).__name__)
    finally:
        heartbeat.stop()
        flower_runtime.push_outcome(client, context, completed, details)
        client.close()
    return 0 if completed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m site_agent.task", description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    configure_logging()
    return run_task(args.runtime_api_address, args.token)


if __name__ == "__main__":
    sys.exit(main())
