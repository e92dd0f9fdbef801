"""Sites that hold a release for review: asked again with the same request, and recorded as such, not as failures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from coordinator import collect, messaging, run_state
from coordinator.federation import request_record
from coordinator.receive import OutcomeStatus, SiteOutcome
from coordinator.report import render_report
from coordinator.summary import RunStatus, build_summary
from shared.config import RunConfig
from shared.datasets import dataset_info
from shared.wire import FieldKey, RecordKey, ReleaseState, release_state_of, release_state_reply
from tests.conftest import make_request

PENDING = "the release for run 'r' awaits this site's manual approval; nothing was sent"
DECLINED = "the release for run 'r' was rejected by this site's reviewer: too close to a patient; nothing was sent"
HELD, REJECTED = (ReleaseState.AWAITING_APPROVAL, PENDING), (ReleaseState.REJECTED_AT_SITE, DECLINED)
# What an older site, or a forger, might send: the held sentence inside Flower's error text. Only a typed reply counts.
ERROR_TEXT = "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. Message: {}'>"


class ReviewingGrid:
    """Each node answers from a script, one answer per ask: a release state, an error reason, or a bundle's bytes."""

    def __init__(self, scripts: dict[int, list[str | bytes]]) -> None:
        self.scripts, self.sent, self.asked = scripts, {}, []

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = f"m{len(self.sent)}"
            msg.metadata.__dict__["_message_id"] = mid
            self.sent[mid] = msg
            self.asked.append((msg.metadata.dst_node_id, msg.content[RecordKey.REQUEST][FieldKey.REQUEST_JSON]))
            ids.append(mid)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        replies = []
        for mid in ids:
            msg = self.sent.pop(mid)
            answer = self.scripts[msg.metadata.dst_node_id].pop(0)
            if isinstance(answer, bytes):
                content = RecordDict({RecordKey.BUNDLE: ConfigRecord({FieldKey.SEALED: answer})})
                replies.append(Message(content, reply_to=msg))
            elif isinstance(answer, tuple):
                replies.append(release_state_reply(msg, *answer))
            else:
                replies.append(Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=answer), reply_to=msg))
        return replies


pytestmark = pytest.mark.usefixtures("fast_polling")


def test_waiting_sites_are_asked_again_with_the_same_request_until_they_decide() -> None:
    """Node 1 approves on the second ask, node 2 rejects on the third; node 3 delivered at once and is not re-asked."""
    grid = ReviewingGrid({1: [HELD, b"sealed"], 2: [HELD, HELD, REJECTED], 3: [b"other"]})
    requests = {n: make_request(nonce=f"{n:02d}" * 32) for n in (1, 2, 3)}
    contents = {n: request_record(r) for n, r in requests.items()}
    seen = []
    first = messaging.exchange(grid, contents, "query.distill", timeout=1.0)
    config = RunConfig(approval_wait_s=5.0, approval_ask_every_s=0.01)
    replies = collect.await_approvals(grid, config, requests, first, None, lambda node, _: seen.append(node))
    assert release_state_of(replies[1]) is None and release_state_of(replies[2]) == REJECTED
    assert release_state_of(replies[3]) is None
    assert [node for node, _ in grid.asked] == [1, 2, 3, 1, 2, 2] and seen == [1, 2, 2]
    assert all(text == requests[node].model_dump_json() for node, text in grid.asked)  # same request, same nonce


def test_without_approval_wait_the_coordinator_asks_once() -> None:
    """approval-wait-s 0 (the default): a waiting site is recorded as waiting, not asked again."""
    grid = ReviewingGrid({1: [HELD]})
    requests = {1: make_request()}
    first = messaging.exchange(grid, {1: request_record(requests[1])}, "query.distill", timeout=1.0)
    assert collect.await_approvals(grid, RunConfig(), requests, first, None, lambda *_: None) == first
    assert len(grid.asked) == 1


@pytest.mark.parametrize(("answer", "status", "shown"), [
    (HELD, OutcomeStatus.AWAITING_APPROVAL, PENDING),
    (REJECTED, OutcomeStatus.REJECTED_AT_SITE, DECLINED),
    (ERROR_TEXT.format(PENDING), OutcomeStatus.REJECTED, "site reported an error"),  # text decides nothing
    ("<class 'shared.errors.DataError'>:<'no training images'>", OutcomeStatus.REJECTED, "site reported an error"),
])
def test_a_held_or_declined_release_is_its_own_status(answer, status: OutcomeStatus, shown: str) -> None:
    """Awaiting approval and rejected by the site's reviewer are typed replies, recorded apart from failures."""
    request_msg = Message(RecordDict(), dst_node_id=7, message_type="query.distill")
    request_msg.metadata.__dict__["_message_id"] = "m0"
    reply = (release_state_reply(request_msg, *answer) if isinstance(answer, tuple) else
             Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=answer), reply_to=request_msg))
    outcome, bundle = collect._receive_one(7, reply, SimpleNamespace(site_id="site-0"), None, set())
    assert bundle is None and outcome.status == status and shown in outcome.reason
    if status != OutcomeStatus.REJECTED:
        assert outcome.reason == shown  # the site's sentence alone
    config = RunConfig()
    summary = build_summary(config, "r", [outcome], None, dataset_info("breastmnist"), None, {}, RunStatus.FAILED)
    assert summary.sites[0].status == status and summary.sites_by_status == {status: 1}
    report = render_report(summary)
    assert f"| {status.value} |" in report
    assert ("Site review:" in report) == (status != OutcomeStatus.REJECTED)


def test_the_run_state_remembers_whose_release_awaits_approval(tmp_path) -> None:
    """After receiving, the keys of sites awaiting approval are saved for a resumed run."""
    state = run_state.RunState(run_id="r")
    bindings = {7: SimpleNamespace(node_id=7, site_id="site-0"), 8: SimpleNamespace(node_id=8, site_id=None)}
    federation = SimpleNamespace(bindings=bindings, state=state, run_dir=tmp_path)
    outcomes = [SiteOutcome(7, "site-0", OutcomeStatus.AWAITING_APPROVAL, PENDING),
                SiteOutcome(8, None, OutcomeStatus.AWAITING_APPROVAL, PENDING),
                SiteOutcome(None, "site-9", OutcomeStatus.MISSING, "never connected")]
    collect.remember_awaiting_approval(federation, outcomes)
    saved = run_state.RunState.model_validate_json((tmp_path / run_state.STATE).read_text())
    assert saved.awaiting_approval == ["node-8", "site-0"]
