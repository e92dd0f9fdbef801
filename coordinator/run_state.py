"""What a run has asked for and received, kept on disk so a stopped run can be resumed.

::

    <run-dir>/state.json              run id, the round in progress, per site the DistillRequest (with its
                                      nonce) last sent, the requests and metrics of completed rounds
    <run-dir>/bundles/<site>.sealed   each round-1 bundle exactly as received, still encrypted (atomic writes)
    <run-dir>/bundles/round-<k>/      the bundles of refinement round k

Resuming (``coordinator run --resume <run-dir>``) keeps the run id, re-opens every stored bundle
against the request stored for its site (decrypt, verify the signature against the trust store,
check run id, nonce and contents: nothing is trusted because it was on disk), and asks only the
sites without a valid bundle, each with a fresh nonce that replaces the old request. So a bundle is
only ever accepted for the exact (run id, site, nonce) the coordinator issued and still holds, a
site delivers at most once per run, and a late reply to a superseded request fails the nonce check.
The exception: a site whose release awaited its operator's approval when the run stopped is asked
the same request again, since the release its operator reviews answers only that nonce.
The stored bundles are as confidential as in transit: only the coordinator's private key opens them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from coordinator.receive import Expectation, receive_bundle
from coordinator.summary import RoundRecord
from coordinator.trust import CoordinatorKeys
from shared.bundle import OpenedBundle
from shared.config import RunConfig
from shared.errors import ConfigError, FedDistillError
from shared.fields import is_run_id
from shared.schemas import DistillRequest
from shared.untrusted import untrusted_text

log = logging.getLogger(__name__)

STATE = "state.json"
BUNDLES = "bundles"
# Settings a resumed run may change; everything else comes from the stopped run's run_config.json,
# so the stored bundles still answer exactly what is asked.
OPERATIONAL = ("min_sites", "node_wait_timeout", "distill_timeout", "evaluate_timeout", "keys_dir", "device",
               "out_dir", "run_dir", "resume", "max_bundle_mb", "rounds", "approval_wait_s", "approval_ask_every_s")


class RunState(BaseModel):
    """The run id and the request last sent to each site (keyed by site id, or ``node-<id>`` when unnamed).

    ``expected_site`` records, per key, the site the node was registered as (None for an unnamed,
    simulated node, whose bundle names its site and is vouched for by its signature alone).
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    round: int = 1  # the round in progress
    requests: dict[str, DistillRequest] = {}  # of the round in progress
    expected_site: dict[str, str | None] = {}
    awaiting_approval: list[str] = []  # keys whose release awaited the site's approval in the round in progress
    completed: dict[int, dict[str, DistillRequest]] = {}  # requests of completed rounds, whose bundles stay valid
    history: list[RoundRecord] = []  # per completed round: its metrics and bytes (the summary's rounds)

    def record_request(self, key: str, request: DistillRequest, expected_site: str | None) -> None:
        self.requests[key] = request
        self.expected_site[key] = expected_site

    def request_to_send(self, key: str, fresh: DistillRequest) -> DistillRequest:
        """The request on record while the site's release awaits its approval (same nonce), else ``fresh``."""
        held = self.requests.get(key)
        return held if key in self.awaiting_approval and held is not None else fresh

    def next_round(self, record: RoundRecord) -> None:
        """Close the round in progress with its record; the next one starts with no request sent."""
        self.completed[self.round] = dict(self.requests)
        self.history.append(record)
        self.round += 1
        self.requests = {}
        self.awaiting_approval = []


def start(run_dir: Path, config: RunConfig) -> tuple[RunState, RunConfig]:
    """A fresh state for a new run, or the stored one (and the stored settings) when resuming.

    Raises:
        ConfigError: resuming a folder without a run, or starting a new run in a folder that holds one.
    """
    path = run_dir / STATE
    if not is_run_id(run_dir.name):  # the folder's name is the run id every site checks at its door
        raise ConfigError(f"run folder name {run_dir.name!r} is not a run id: letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit, at most 128", hint="choose another run-dir")
    if not config.resume:
        if path.exists():
            raise ConfigError(f"run folder {run_dir.name!r} already holds a run",
                              hint=f"continue it with `coordinator run --resume {run_dir}` or choose another run-dir")
        # The run's one name, everywhere (bundles, summary, report, --resume): its results folder's.
        return RunState(run_id=run_dir.name), config
    if not path.exists():
        raise ConfigError(f"run folder {run_dir.name!r} holds no stopped run to resume (no {STATE})")
    state = RunState.model_validate_json(path.read_text())
    stored = stored_config(run_dir)
    return state, stored.model_copy(update={key: getattr(config, key) for key in OPERATIONAL})


def stored_config(run_dir: Path) -> RunConfig:
    """The settings a run recorded in its results folder (``run_config.json``, written as the run starts)."""
    return RunConfig.from_flower(json.loads((run_dir / "run_config.json").read_text()))


def save(run_dir: Path, state: RunState) -> None:
    _write_atomic(run_dir / STATE, state.model_dump_json(indent=2).encode())


def bundle_path(run_dir: Path, site_key: str, round_number: int = 1) -> Path:
    folder = run_dir / BUNDLES if round_number == 1 else run_dir / BUNDLES / f"round-{round_number}"
    return folder / f"{site_key}.sealed"


def store_bundle(run_dir: Path, site_key: str, sealed: bytes, round_number: int = 1) -> None:
    """Keep a received bundle, still encrypted, as it arrives (never a half-written file)."""
    _write_atomic(bundle_path(run_dir, site_key, round_number), sealed)


def stored_bundles(run_dir: Path, state: RunState, round_number: int | None = None) -> dict[str, bytes]:
    """The stored bundle of each site that has a request in that round (default: the round in progress)."""
    number = state.round if round_number is None else round_number
    requests = state.requests if number == state.round else state.completed.get(number, {})
    return {key: path.read_bytes() for key in requests if (path := bundle_path(run_dir, key, number)).is_file()}


def reverify_stored(run_dir: Path, state: RunState, expectation: Callable[[DistillRequest, str | None], Expectation],
                    keys: CoordinatorKeys, round_number: int | None = None) -> dict[str, OpenedBundle]:
    """Open again every bundle a stopped run stored in a round (default: the one in progress), against
    the request on record for it.

    Nothing is trusted because it was on disk: a bundle that no longer opens or validates is logged
    and left out, so its site is asked again. Empty for a new run.
    """
    number = state.round if round_number is None else round_number
    requests = state.requests if number == state.round else state.completed.get(number, {})
    valid: dict[str, OpenedBundle] = {}
    for key, sealed in stored_bundles(run_dir, state, number).items():
        expected = expectation(requests[key], state.expected_site.get(key))
        try:
            valid[key] = receive_bundle(sealed, expected, keys, {b.manifest.site_id for b in valid.values()})
        except FedDistillError as exc:
            log.warning("stored bundle of %s no longer verifies (%s); asking again", untrusted_text(key),
                        untrusted_text(exc))  # the bundle's text is the site's, not ours
    return valid


def progress(run_dir: Path) -> list[dict[str, Any]]:
    """Per site of a run still going: delivered, or distilling since it was asked (from state.json and bundles/).

    Empty when the folder holds no readable state (not started, or not a results folder).
    """
    try:
        state = RunState.model_validate_json((run_dir / STATE).read_text())
    except (OSError, ValueError):
        return []
    delivered = stored_bundles(run_dir, state)
    rows = []
    for key, request in sorted(state.requests.items()):
        status = "delivered" if key in delivered else "distilling"
        reason = f"round {state.round}" + ("" if key in delivered else f", asked for {request.distill.iterations} "
                                            f"iterations of {request.distill.method.value}")
        rows.append({"site_id": state.expected_site.get(key) or key, "status": status, "reason": reason})
    return rows


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
