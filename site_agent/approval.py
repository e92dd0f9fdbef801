"""The manual-approval hook: with ``require_approval`` in the site policy, nothing is sent until a person agrees.

Interface: a :class:`ReleaseApproval` gets every sealed release before it is sent and returns the
exact bytes to send, or raises ``ApprovalPending``. ``handlers.answer_distill`` calls it only when
the policy asks for approval.

The default, :class:`FolderApproval`, gives each request (run id and nonce) a folder under the
approvals directory (the policy's ``approvals_dir``, else ``<cache-dir>/approvals``)::

    <approvals-dir>/<run-id>-<nonce[:12]>/
        release.fdsb                        the sealed bundle, exactly as it would be sent
        release.site-local-preview.png      its images, one row per class
        release.site-local-manifest.json    its signed manifest
        APPROVED                            created by the site's operator once they have reviewed it

The first time a request arrives the release is written there and refused ("awaits approval").
Once ``APPROVED`` exists, the same request is answered with the stored bundle: the one that was
reviewed, not a newly distilled one.

Not done yet (a later issue): a ``site-agent approve`` command, telling the operator, and a
coordinator that waits for or asks again a site whose release awaits approval. Until then a held
release answers its run only if the coordinator sends the same request again.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Protocol

from shared.bundle import SealedBundle
from shared.errors import ApprovalPending, PolicyError
from site_agent.preview import write_release
from site_agent.release import SealedRelease
from site_agent.settings import SiteSettings

log = logging.getLogger(__name__)

APPROVED = "APPROVED"
BUNDLE_NAME = "release.fdsb"


class ReleaseApproval(Protocol):
    """Decides whether a sealed release may leave the site."""

    def approve(self, release: SealedRelease) -> bytes:
        """The sealed bytes to send for this release.

        Raises:
            ApprovalPending: not approved (yet); nothing may be sent.
        """
        ...


class FolderApproval:
    """Approval by a file: releases wait in a folder until an operator creates ``APPROVED`` beside them."""

    def __init__(self, approvals_dir: Path) -> None:
        self.approvals_dir = approvals_dir

    def folder_for(self, run_id: str, nonce: str) -> Path:
        """The folder of one request; the run id comes from the coordinator, so it is made safe as a name."""
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:64]
        return self.approvals_dir / f"{safe_run}-{nonce[:12]}"

    def approve(self, release: SealedRelease) -> bytes:
        manifest = release.manifest
        folder = self.folder_for(manifest.run_id, manifest.nonce)
        bundle = folder / BUNDLE_NAME
        if (folder / APPROVED).exists():
            return _approved_bundle(bundle, manifest.run_id, manifest.nonce)
        if not bundle.exists():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_release(release, bundle)
        log.warning("release for run %s awaits approval at %s (create %s there to approve it)",
                    manifest.run_id, folder, APPROVED)
        raise ApprovalPending(
            f"the release for run {manifest.run_id!r} awaits this site's manual approval; nothing was sent",
            folder=str(folder),
        )


def approval_for(settings: SiteSettings) -> ReleaseApproval:
    """The site's approval hook: the default folder approval in the configured approvals directory."""
    configured = settings.policy.approvals_dir
    return FolderApproval(Path(configured).expanduser() if configured else settings.cache_dir / "approvals")


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

