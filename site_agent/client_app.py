"""The site agent as a Flower ClientApp: turns messages into calls of ``site_agent.handlers`` and back.

``query.distill`` -> a sealed bundle (bytes in a ConfigRecord) and numbers (MetricRecord), nothing else.
``evaluate``      -> summable counts of the global model on the site's test share (MetricRecord; shared.metrics).
``query.tune``    -> confusion counts on the site's training share, one per candidate imbalance correction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from pydantic import BaseModel, ValidationError

from shared.config import SiteRunConfig
from shared.errors import ApprovalPending, ConfigError, FedDistillError, ReleaseRejected
from shared.fields import first_problem
from shared.logs import configure_logging
from shared.schemas import DistillRequest, EvaluateRequest, TuneRequest
from shared.wire import FieldKey, MessageKind, RecordKey, ReleaseState, release_state_reply
from site_agent.handlers import answer_distill, answer_evaluate, answer_tune
from site_agent.settings import SiteSettings, site_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
RequestT = TypeVar("RequestT", bound=BaseModel)

REQUEST_FIELD = FieldKey.REQUEST_JSON
BUNDLE_FIELD = FieldKey.SEALED


SettingsFor = Callable[[Context, SiteRunConfig], SiteSettings]


def build_client_app(
    run_config_overrides: Mapping[str, Any] | None = None,
    mods: Sequence[Callable] = (),
    settings_for: SettingsFor | None = None,
) -> ClientApp:
    """A ClientApp. A deployed site reads its settings from its node config; ``settings_for`` replaces that where
    one machine plays every site (``harness.sites``), and ``run_config_overrides`` stand in for ``--run-config``."""
    app = ClientApp(mods=list(mods))
    overrides = dict(run_config_overrides or {})
    settings_of = settings_for or _node_settings

    @app.query(MessageKind.DISTILL.removeprefix("query."))
    def distill(msg: Message, context: Context) -> Message:
        settings = _settings(context, overrides, settings_of)
        request = _read_request(msg, DistillRequest)
        global_model = _arrays(msg) if request.global_model is not None else None
        try:
            sealed, metrics = _safely(lambda: answer_distill(request, settings, global_model=global_model))
        except ApprovalPending as exc:  # the site's decision, not a failure: a typed reply, not an error
            return release_state_reply(msg, ReleaseState.AWAITING_APPROVAL, str(exc))
        except ReleaseRejected as exc:
            return release_state_reply(msg, ReleaseState.REJECTED_AT_SITE, str(exc))
        content = RecordDict(
            {RecordKey.BUNDLE: ConfigRecord({BUNDLE_FIELD: sealed}), RecordKey.METRICS: MetricRecord(metrics)}
        )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _counts_reply(msg, EvaluateRequest, answer_evaluate, _settings(context, overrides, settings_of))

    @app.query(MessageKind.TUNE.removeprefix("query."))
    def tune(msg: Message, context: Context) -> Message:
        return _counts_reply(msg, TuneRequest, answer_tune, _settings(context, overrides, settings_of))

    return app


def _counts_reply(
    msg: Message,
    request_type: type[RequestT],
    answer: Callable[[RequestT, list[bytes], SiteSettings], dict[str, Any]],
    settings: SiteSettings,
) -> Message:
    """A request answered with counts only (evaluate, tune), about a model the site trains itself on the pool."""
    request = _read_request(msg, request_type)
    pool = _pool(msg)
    metrics = _safely(lambda: answer(request, pool, settings))
    return Message(RecordDict({RecordKey.METRICS: MetricRecord(metrics)}), reply_to=msg)


def _pool(msg: Message) -> list[bytes]:
    """The pooled sets a scoring request carries (verified where they are used). Weights are refused: the site
    scores only a model it trains itself."""
    if RecordKey.ARRAYS in msg.content.array_records:
        raise ConfigError(f"{msg.metadata.message_type} message carries model weights: this site scores only a "
                          "model it trains itself on the pooled sets")
    record = msg.content.config_records.get(RecordKey.POOL)
    sets = None if record is None else record.get(FieldKey.SETS)
    if not isinstance(sets, list) or not all(isinstance(s, bytes) for s in sets):
        raise ConfigError(f"{msg.metadata.message_type} message carries no pooled sets")
    return sets


def _settings(context: Context, overrides: Mapping[str, Any], settings_of: SettingsFor) -> SiteSettings:
    configure_logging()  # progress lines stay in the site's own log
    return settings_of(context, SiteRunConfig.from_flower({**context.run_config, **overrides}))


def _node_settings(context: Context, _run: SiteRunConfig) -> SiteSettings:
    return site_settings(context.node_config)


def _arrays(msg: Message) -> dict[str, Any]:
    """The model weights a request carries (checked against its model spec where they are used)."""
    if RecordKey.ARRAYS not in msg.content.array_records:
        raise ConfigError(f"{msg.metadata.message_type} message carries no model weights")
    return msg.content.array_records[RecordKey.ARRAYS].to_torch_state_dict()


def _read_request(msg: Message, model: type[RequestT]) -> RequestT:
    """Parse the request record at the door; anything malformed is refused with a named reason."""
    record = msg.content.config_records.get(RecordKey.REQUEST)
    if record is None or not isinstance(record.get(REQUEST_FIELD), str):
        raise ConfigError(f"message carries no {model.__name__}")
    try:
        return model.model_validate_json(record[REQUEST_FIELD])
    except ValidationError as exc:
        raise ConfigError(f"{model.__name__} {first_problem(exc)}") from None


def _safely(work: Callable[[], T]) -> T:
    """Run site work; errors other than ours are logged here and reported without their text.

    Flower sends a handler's exception text to the coordinator. Our errors are written to be safe
    to share; any other exception could quote a path or a value, so only its type travels.
    """
    try:
        return work()
    except FedDistillError as exc:
        log.warning("refused: %s", exc.diagnostics())  # with its local detail (file names), which stays here
        raise
    except Exception as exc:
        log.exception("site agent failed")
        raise RuntimeError(f"site agent failed with {type(exc).__name__}; details are in the site's log") from None


app = build_client_app()
