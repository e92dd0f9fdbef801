"""The privacy report's randomness comes from the site, never from the coordinator.

The report trains an attacked model, a feature network and a reference model, draws a reference subset,
distills shadow sets and bootstraps its intervals: all random. Seeded from the request, the coordinator
could replay the report (and so tell which seeds pass a leaky set) or simply ask again until a draw passes.
So the seed is derived at the site::

    seed = HMAC-SHA256(site secret, "feddistill privacy report v1" || SHA-256(images) || SHA-256(labels))[:8] mod 2^31

The site secret is 32 random bytes in ``<cache-dir>/privacy-report.secret`` (0600), created once by the first
report and never sent. The same set always gets the same report at the same site, whatever request asked
for it (its run id, nonce or seed): asking again for a set that was blocked gets the same block. A
different set is a different release attempt, which the site's budgets count (``site_agent.budget``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import torch

SECRET_NAME = "privacy-report.secret"
_SECRET_BYTES = 32
_LABEL = b"feddistill privacy report v1"


def report_seed(cache_dir: Path, images: torch.Tensor, labels: torch.Tensor) -> int:
    """The seed of the privacy report of a synthetic set (images (N, C, H, W), labels (N,)): in [0, 2^31)."""
    message = (_LABEL + hashlib.sha256(images.detach().cpu().float().contiguous().numpy().tobytes()).digest()
               + hashlib.sha256(labels.detach().cpu().long().contiguous().numpy().tobytes()).digest())
    digest = hmac.new(site_secret(cache_dir), message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def site_secret(cache_dir: Path) -> bytes:
    """The site's report secret, created (0600) on first use; two processes creating it at once agree on one.

    Raises:
        OSError: the cache cannot be written, or the secret file is unreadable or not 32 bytes long.
    """
    path = cache_dir / SECRET_NAME
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cache_dir / f".{SECRET_NAME}.{os.getpid()}.tmp"
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(_SECRET_BYTES))
        try:
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the secret
                os.link(tmp, path)
        finally:
            tmp.unlink()
    secret = path.read_bytes()
    if len(secret) != _SECRET_BYTES:
        raise OSError(f"the privacy report's secret holds {len(secret)} bytes, not {_SECRET_BYTES}")
    return secret
