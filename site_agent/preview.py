"""Site-local previews: distill without a coordinator, and look inside a sealed bundle.

``site-agent distill`` runs the ClientApp's own path (``handlers.prepare_release``: site policy, local
data, distillation, near-copy check, seal to the pinned coordinator key) on a request made up at the
site (:func:`preview_request`), and :func:`write_release` leaves three files::

    <out>                                  the sealed bundle, exactly as it would be sent
    <out-stem>.site-local-preview.png      its synthetic images in clear, one row per class
    <out-stem>.site-local-manifest.json    its signed manifest in clear

The two site-local files show the site's own people what the bundle holds; they are not sent.
A preview bundle carries run id ``site-local-preview-<time>`` and a nonce of its own, so no
coordinator run would accept it in place of a real answer.

:func:`summarize_bundle` is what anyone can see of a bundle (the clear header and sizes);
:func:`open_for_inspection` opens one as the coordinator does, with its private key and a site's
public signing key.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pydantic import BaseModel

from shared import crypto
from shared.bundle import BundleHeader, OpenedBundle, SealedBundle, open_bundle
from shared.datasets import dataset_info
from shared.grid import image_grid
from shared.methods import DistillConfig
from shared.schemas import DistillRequest
from site_agent.release import SealedRelease

PREVIEW_RUN_ID = "site-local-preview"


@dataclass(frozen=True)
class SiteLocalFiles:
    """Where a release and its site-local preview are written."""

    bundle: Path
    preview: Path
    manifest: Path


def site_local_files(bundle: Path) -> SiteLocalFiles:
    """The preview and manifest paths that go beside ``bundle``."""
    return SiteLocalFiles(
        bundle,
        bundle.with_name(f"{bundle.stem}.site-local-preview.png"),
        bundle.with_name(f"{bundle.stem}.site-local-manifest.json"),
    )


def preview_request(dataset: str, config: DistillConfig) -> DistillRequest:
    """A request made up at the site, in place of a coordinator's: a preview run id and a fresh nonce."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return DistillRequest(run_id=f"{PREVIEW_RUN_ID}-{stamp}", nonce=secrets.token_hex(32), dataset=dataset,
                          distill=config)


def write_release(release: SealedRelease, bundle: Path) -> SiteLocalFiles:
    """Write the sealed bundle, a grid of its images and its manifest."""
    files = site_local_files(bundle)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(release.sealed)
    synthetic = release.synthetic
    label_names = dataset_info(release.manifest.dataset).label_names
    image_grid(synthetic.images.numpy(), synthetic.labels.numpy(), label_names).save(files.preview)
    files.manifest.write_text(release.manifest.model_dump_json(indent=2) + "\n")
    return files


class BundleSummary(BaseModel):
    """What anyone holding a sealed bundle can see without the coordinator's private key."""

    header: BundleHeader
    total_bytes: int
    header_bytes: int
    ciphertext_bytes: int


def summarize_bundle(sealed: bytes) -> BundleSummary:
    """The clear header and the sizes of a sealed bundle.

    Raises:
        InvalidBundle: not a sealed bundle, or a malformed header.
    """
    bundle = SealedBundle.from_bytes(sealed)
    return BundleSummary(header=bundle.header, total_bytes=bundle.total_bytes, header_bytes=len(bundle.header_bytes),
                         ciphertext_bytes=len(bundle.ciphertext))


def open_for_inspection(sealed: bytes, coordinator_key: Path, site_key: Path) -> OpenedBundle:
    """Decrypt with the coordinator's private key and verify against ``site_key``, as the coordinator does.

    Raises:
        KeyFileError: a key file is missing or of the wrong kind.
        InvalidBundle, DecryptionError, VerificationError: see ``shared.bundle.open_bundle``.
    """
    recipient = crypto.load_private_key(coordinator_key, crypto.RecipientKey)
    verify_key = crypto.load_public_key(site_key, crypto.VerifyKey)
    return open_bundle(sealed, recipient, lambda _site_id: verify_key, max_bytes=len(sealed))


def opened_grid(opened: OpenedBundle) -> Image.Image:
    """A grid of an opened bundle's images, one row per class of its dataset."""
    return image_grid(opened.images, opened.labels, dataset_info(opened.manifest.dataset).label_names)
