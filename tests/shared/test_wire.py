"""The messages both sides exchange: a release's typed state, read only from its own record."""

from __future__ import annotations

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from shared.wire import FieldKey, MessageKind, RecordKey, ReleaseState, release_state_of, release_state_reply


def _request() -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    msg = Message(RecordDict(), dst_node_id=7, message_type=MessageKind.DISTILL)
    msg.metadata.__dict__["_message_id"] = "m0"
    return msg


def test_a_release_state_round_trips_and_its_reason_is_made_safe() -> None:
    reply = release_state_reply(_request(), ReleaseState.AWAITING_APPROVAL, "held\n\x1b[2Japproved by Dr A")
    state, reason = release_state_of(reply)
    assert state == ReleaseState.AWAITING_APPROVAL and "\n" not in reason and "\x1b" not in reason


def test_only_a_known_state_in_its_own_record_counts() -> None:
    request = _request()
    unknown = Message(RecordDict({RecordKey.RELEASE_STATE: ConfigRecord({FieldKey.STATE: "approved-by-coordinator",
                                                                         FieldKey.REASON: "x"})}), reply_to=request)
    error = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                          reason="the release awaits this site's manual approval"), reply_to=request)
    bundle = Message(RecordDict({RecordKey.BUNDLE: ConfigRecord({FieldKey.SEALED: b"x"})}), reply_to=request)
    assert release_state_of(unknown) is None and release_state_of(error) is None and release_state_of(bundle) is None
