"""Human review of releases: with ``require_approval`` in the site policy, nothing is sent until a person agrees.

Interface: a :class:`ReleaseApproval` is asked first, before any data is loaded, whether a request
(run id and nonce) has been decided (:meth:`~ReleaseApproval.decided`), and otherwise gets the sealed
release to hold (:meth:`~ReleaseApproval.hold`). ``handlers.answer_distill`` uses it only when the
policy asks for approval::

    approved  -> the stored bundle is sent, byte for byte the one reviewed (no new distillation)
    rejected  -> ReleaseRejected, with the reviewer's reason (theirs to share, cut to 200 characters)
    held      -> ApprovalPending again, without distilling again
    nothing   -> distill, hold the release here, ApprovalPending

The default, :class:`FolderApproval`, gives each request a folder under the approvals directory (the
policy's ``approvals_dir``, else ``<cache-dir>/approvals``); its name is the release's ID::

    <approvals-dir>/<run-id>-<nonce[:12]>/
        release.fdsb                        the sealed bundle, exactly as it would be sent
        release.site-local-preview.png      its images, one row per class
        release.site-local-manifest.json    its signed manifest
        privacy-report.json                 a copy of the site's privacy report (when the policy measures one)
        request.json                        the coordinator's DistillRequest that asked for it
        metrics.json                        the numbers sent beside the bundle once it is approved
        review.html                         the reviewer's page, written by ``site-agent review``
        APPROVED                            {"by", "at"}: ``site-agent approve ID --by NAME``
        REJECTED                            {"by", "at", "reason"}: ``site-agent reject``; the bundle is deleted

Every decision is also written to the site's audit log (``site_agent.audit``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.bundle import SealedBundle
from shared.errors import (
    ApprovalPending,
    ConfigError,
    PolicyError,
    ReleaseRejected,
)
from shared.manifest import BundleManifest
from shared.schemas import DistillRequest, MetricKey
from shared.untrusted import untrusted_text
from site_agent import audit
from site_agent.audit import AuditEvent
from site_agent.cache import write_atomically
from site_agent.policy import SitePolicy
from site_agent.preview import site_local_files, write_release
from site_agent.privacy.page import REPORT_JSON, privacy_report_folder
from site_agent.release import SealedRelease
from site_agent.settings import SiteSettings

log = logging.getLogger(__name__)

APPROVED = "APPROVED"
REJECTED = "REJECTED"
BUNDLE_NAME = "release.fdsb"
REQUEST_NAME = "request.json"
METRICS_NAME = "metrics.json"
MAX_REASON_CHARS = 200

M = TypeVar("M", bound=BaseModel)


class ReleaseStatus(StrEnum):
    HELD = "held"  # waiting for a reviewer
    APPROVED = "approved"
    REJECTED = "rejected"


class Decision(BaseModel):
    """Who decided, when (UTC, ISO 8601) and, for a rejection, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(min_length=1, max_length=200)
    at: str
    reason: str = Field("", max_length=2000)


@dataclass(frozen=True)
class HeldRelease:
    """One release in the approvals folder, as the reviewer sees it."""

    id: str  # the folder's name
    folder: Path
    status: ReleaseStatus
    request: DistillRequest | None
    manifest: BundleManifest | None
    decision: Decision | None


class ReleaseApproval(Protocol):
    """Decides whether a sealed release may leave the site."""

    def decided(self, request: DistillRequest) -> tuple[bytes, dict[str, float]] | None:
        """The approved bundle and its metrics for this request; None when nothing is held for it.

        Raises:
            ApprovalPending: a release is held for this request and not decided yet.
            ReleaseRejected: the site's reviewer rejected it.
        """
        ...

    def hold(self, release: SealedRelease, request: DistillRequest, metrics: dict[str, float]) -> NoReturn:
        """Keep a new release for review.

        Raises:
            ApprovalPending: always; nothing may be sent until it is approved.
        """
        ...


class FolderApproval:
    """Approval by folder: releases wait under ``approvals_dir`` until the site's operator decides.

    ``cache_dir`` is the site's cache, whose audit log records every decision.
    """

    def __init__(self, approvals_dir: Path, cache_dir: Path | None = None) -> None:
        self.approvals_dir = approvals_dir
        self.cache_dir = cache_dir if cache_dir is not None else approvals_dir.parent

    def folder_for(self, run_id: str, nonce: str) -> Path:
        """The folder of one request; the run id comes from the coordinator, so it is made safe as a name."""
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:64]
        return self.approvals_dir / f"{safe_run}-{nonce[:12]}"

    def decided(self, request: DistillRequest) -> tuple[bytes, dict[str, float]] | None:
        folder = self.folder_for(request.run_id, request.nonce)
        held = _read(folder) if folder.is_dir() else None
        if held is None or (held.status == ReleaseStatus.HELD and not (folder / BUNDLE_NAME).is_file()):
            return None
        if held.status == ReleaseStatus.REJECTED:
            reason = held.decision.reason if held.decision else ""
            raise ReleaseRejected(
                f"the release for run {request.run_id!r} was rejected by this site's reviewer"
                f"{': ' + reason[:MAX_REASON_CHARS] if reason else ''}; nothing was sent"
            )
        if held.status == ReleaseStatus.HELD:
            raise _pending(request.run_id, folder)
        sealed = _approved_bundle(folder / BUNDLE_NAME, request.run_id, request.nonce)
        return sealed, _stored_metrics(folder, held.manifest, sealed)

    def hold(self, release: SealedRelease, request: DistillRequest, metrics: dict[str, float]) -> NoReturn:
        folder = self.folder_for(request.run_id, request.nonce)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_release(release, folder / BUNDLE_NAME)
        (folder / REQUEST_NAME).write_text(request.model_dump_json(indent=2) + "\n")
        (folder / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
        report = privacy_report_folder(self.cache_dir, request.run_id, request.nonce) / REPORT_JSON
        if report.is_file():
            shutil.copyfile(report, folder / REPORT_JSON)
        audit.record(self.cache_dir, AuditEvent.DECISION, request, "policy", decision="held", why="require_approval")
        log.warning("release for run %s awaits approval as %s (`site-agent review`, then `site-agent approve %s`)",
                    untrusted_text(request.run_id), folder.name, folder.name)
        raise _pending(request.run_id, folder)

    def releases(self) -> list[HeldRelease]:
        """Every release in the folder, oldest request first (by folder time)."""
        if not self.approvals_dir.is_dir():
            return []
        folders = sorted((p for p in self.approvals_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        return [held for folder in folders if (held := _read(folder)) is not None]

    def get(self, release_id: str) -> HeldRelease:
        """One release by its ID (its folder's name).

        Raises:
            ConfigError: no release has this ID.
        """
        folder = self.approvals_dir / release_id
        held = _read(folder) if "/" not in release_id and release_id not in ("", ".", "..") and folder.is_dir() else None
        if held is None:
            raise ConfigError(f"no release with ID {release_id!r} in the approvals folder",
                              hint="`site-agent review` lists the releases and their IDs")
        return held

    def approve(self, release_id: str, by: str) -> HeldRelease:
        """Mark a held release approved: the next time its request arrives, its bundle is sent.

        Raises:
            ConfigError: unknown ID, the release was already decided, or its bundle is missing.
        """
        held = self._undecided(release_id, "approve")
        if not (held.folder / BUNDLE_NAME).is_file():
            raise ConfigError(f"release {release_id!r} has no sealed bundle to approve")
        return self._decide(held, APPROVED, Decision(by=by, at=_now()), "approved")

    def reject(self, release_id: str, reason: str, by: str) -> HeldRelease:
        """Mark a held release rejected and delete its sealed bundle; its request is refused from now on.

        Raises:
            ConfigError: unknown ID, or the release was already decided.
        """
        held = self._undecided(release_id, "reject")
        decided = self._decide(held, REJECTED, Decision(by=by, at=_now(), reason=reason), "rejected")
        (held.folder / BUNDLE_NAME).unlink(missing_ok=True)
        return decided

    def _undecided(self, release_id: str, verb: str) -> HeldRelease:
        held = self.get(release_id)
        if held.status != ReleaseStatus.HELD:
            decision = held.decision
            raise ConfigError(f"release {release_id!r} was already {held.status.value}"
                              f"{f' by {decision.by} at {decision.at}' if decision else ''}; it cannot be {verb}d now")
        return held

    def _decide(self, held: HeldRelease, name: str, decision: Decision, verb: str) -> HeldRelease:
        text = decision.model_dump_json(indent=2) + "\n"
        write_atomically(held.folder / name, lambda p: p.write_text(text))
        about = held.request or held.manifest
        if about is not None:
            audit.record(self.cache_dir, AuditEvent.DECISION, about, decision.by, decision=verb, at=decision.at,
                         why=decision.reason or None, release_id=held.id)
        log.info("release %s %s by %s", untrusted_text(held.id), verb, untrusted_text(decision.by))
        return _read(held.folder) or held


def approvals_dir_for(policy: SitePolicy, cache_dir: Path) -> Path:
    """The policy's ``approvals_dir``, else ``<cache-dir>/approvals``."""
    return Path(policy.approvals_dir).expanduser() if policy.approvals_dir else cache_dir / "approvals"


def approval_for(settings: SiteSettings) -> FolderApproval:
    """The site's approval hook: the default folder approval in the configured approvals directory."""
    return FolderApproval(approvals_dir_for(settings.policy, settings.cache_dir), settings.cache_dir)


def _pending(run_id: str, folder: Path) -> ApprovalPending:
    return ApprovalPending(f"the release for run {run_id!r} awaits this site's manual approval; nothing was sent",
                           folder=str(folder))


def _read(folder: Path) -> HeldRelease | None:
    """A release folder as the reviewer sees it; None for a folder holding no release."""
    manifest = _parse(site_local_files(folder / BUNDLE_NAME).manifest, BundleManifest)
    request = _parse(folder / REQUEST_NAME, DistillRequest)
    if manifest is None and request is None:
        return None
    if (folder / REJECTED).exists():
        return HeldRelease(folder.name, folder, ReleaseStatus.REJECTED, request, manifest, _decision(folder / REJECTED))
    if (folder / APPROVED).exists():
        return HeldRelease(folder.name, folder, ReleaseStatus.APPROVED, request, manifest, _decision(folder / APPROVED))
    return HeldRelease(folder.name, folder, ReleaseStatus.HELD, request, manifest, None)


def _decision(path: Path) -> Decision:
    """A decision file; an empty or hand-made ``APPROVED`` counts, its author unknown."""
    try:
        return Decision.model_validate_json(path.read_text())
    except (ValidationError, OSError):
        at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
        return Decision(by="(unknown: file made by hand)", at=at)


def _parse(path: Path, model: type[M]) -> M | None:
    try:
        return model.model_validate_json(path.read_text()) if path.is_file() else None
    except ValidationError:
        log.warning("%s in the approvals folder is not a valid %s; ignored", untrusted_text(path, 1000), model.__name__)
        return None


def _stored_metrics(folder: Path, manifest: BundleManifest | None, sealed: bytes) -> dict[str, float]:
    """The numbers kept when the release was held (rebuilt from its manifest for a folder written before)."""
    path = folder / METRICS_NAME
    if path.is_file():
        return {key: float(value) for key, value in json.loads(path.read_text()).items()}
    return {MetricKey.NUM_EXAMPLES.value: float(manifest.num_real_examples if manifest else 0),
            MetricKey.DISTILL_SECONDS.value: 0.0, MetricKey.SEAL_SECONDS.value: 0.0,
            MetricKey.BUNDLE_BYTES.value: float(len(sealed)),
            MetricKey.SYNTHETIC_IMAGES.value: float(manifest.payload.count if manifest else 0)}


def _approved_bundle(bundle: Path, run_id: str, nonce: str) -> bytes:
    """The reviewed bundle, checked to answer this very request.

    Raises:
        PolicyError: the approved folder lost its bundle, or it holds one for another request.
    """
    if not bundle.is_file():
        raise PolicyError(f"the release for run {run_id!r} is marked approved but its bundle is missing")
    sealed = bundle.read_bytes()
    header = SealedBundle.from_bytes(sealed).header
    if (header.run_id, header.nonce) != (run_id, nonce):
        raise PolicyError(f"the approved bundle for run {run_id!r} answers another request; not sending it")
    return sealed


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
