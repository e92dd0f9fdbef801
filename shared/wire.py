"""The Flower messages the coordinator and the sites exchange, in one place for both sides.

Three kinds of request (``MessageKind``), each a ``RecordDict`` of named records (``RecordKey``, whose
fields are ``FieldKey``): the request itself as validated JSON (``shared.schemas``), the pooled signed sets
where a model is scored (the site trains that model itself), the global model's weights where a refinement
round's release is guided by it, and in the reply either a sealed bundle with its metrics, counts, or a release's typed
state. A release held for the site's approval, or rejected by its reviewer, is a reply of its own kind
(:func:`release_state_reply`), not an error whose text the coordinator would have to parse out of Flower's
or Ray's wording; anything else a site refuses is an error reply, read as one sentence.
"""

from __future__ import annotations

from enum import StrEnum

from flwr.app import ConfigRecord, Message, RecordDict

from shared.untrusted import untrusted_text


class MessageKind(StrEnum):
    """Flower message types: what the coordinator asks of a site."""

    DISTILL = "query.distill"  # a sealed synthetic set (DistillRequest)
    TUNE = "query.tune"  # right predictions per published scale on the site's training images (TuneRequest)
    EVALUATE = "evaluate"  # counts of a model on the site's test images (EvaluateRequest)


class RecordKey(StrEnum):
    """Keys of the records inside Flower messages."""

    REQUEST = "request"  # ConfigRecord: a DistillRequest, TuneRequest or EvaluateRequest as JSON
    BUNDLE = "bundle"  # ConfigRecord: the sealed bundle as bytes
    METRICS = "metrics"  # MetricRecord: counts and timings
    ARRAYS = "arrays"  # ArrayRecord: model weights (a refinement round's global model, which guides a release)
    POOL = "pool"  # ConfigRecord: the pooled sets a scored model is trained on (shared.bundle.ForwardedSet)
    RELEASE_STATE = "release-state"  # ConfigRecord: a release held or rejected at the site, with its reason


class FieldKey(StrEnum):
    """Names of the fields inside those records."""

    REQUEST_JSON = "json"  # in RecordKey.REQUEST
    SEALED = "sealed"  # in RecordKey.BUNDLE
    SETS = "sets"  # in RecordKey.POOL: a list of ForwardedSet bytes
    STATE = "state"  # in RecordKey.RELEASE_STATE: a ReleaseState
    REASON = "reason"  # in RecordKey.RELEASE_STATE: the site's sentence


class ReleaseState(StrEnum):
    """Why a distill request was answered without a bundle, when that is the site's decision and not a failure."""

    AWAITING_APPROVAL = "awaiting-approval"  # held for the site operator's review; ask again later
    REJECTED_AT_SITE = "rejected-at-site"  # the site's reviewer rejected it; it will never be sent


def release_state_reply(request: Message, state: ReleaseState, reason: str) -> Message:
    """The site's reply to a distill request whose release is held or was rejected by its reviewer."""
    record = ConfigRecord({FieldKey.STATE: state.value, FieldKey.REASON: reason})
    return Message(RecordDict({RecordKey.RELEASE_STATE: record}), reply_to=request)


def release_state_of(reply: Message) -> tuple[ReleaseState, str] | None:
    """A reply's release state and the site's reason (made safe to print), or None when it carries none.

    An unknown state is read as no state: the reply is then judged as a bundle reply, and rejected as one.
    """
    if reply.has_error() or not reply.has_content():
        return None
    record = reply.content.config_records.get(RecordKey.RELEASE_STATE)
    if record is None or record.get(FieldKey.STATE) not in set(ReleaseState):
        return None
    return ReleaseState(record[FieldKey.STATE]), untrusted_text(record.get(FieldKey.REASON, ""))
