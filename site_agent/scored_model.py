"""The only model a site scores: one it trains itself, with its own installed code, on sets that it or a
pinned peer signed (``site_agent.peers``).

An evaluate or tune request carries no weights. It carries the pooled sets as the coordinator received
them (``shared.bundle.ForwardedSet``: each site's signed manifest and payload with its signature) and how
to train (``TrainingSpec``, within the policy's caps). The site checks every set: a signature by a key it
trusts, for this run and dataset, of the global model's image shape and classes, within the pixel bounds,
one set per site; then trains the global model the way the coordinator does (``shared.pooled_training``).
A coordinator can therefore only have the site score a model that genuine released sets make: it cannot
craft one that singles out an image, which is what made counts into a reconstruction and membership oracle.

Trained models are kept in the site's cache by the digest of what they were trained on (they are made of
released sets only), so a round's tune and evaluate requests train once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from shared import crypto
from shared.bundle import MAX_ABS_PIXEL, ForwardedSet
from shared.errors import InvalidBundle, PolicyError, VerificationError
from shared.models import ConvNet, build_model
from shared.pooled_training import SiteSet, pooled_arrays, train_on_pool
from shared.schemas import EvaluateRequest, TuneRequest
from site_agent.cache import write_atomically
from site_agent.peers import load_peers
from site_agent.policy import SitePolicy

log = logging.getLogger(__name__)

MAX_SETS = 1000
_KEPT_MODELS = 8  # trained models kept in the cache; older ones are deleted


class UntrustedPool(PolicyError):
    """The pooled sets of a scoring request are not all genuine sets this site trusts."""

    hint = "each hospital pins its federation's peers with `site-agent peers pin --site-id NAME --fingerprint HEX`"


def verified_pool(
    forwarded: Sequence[bytes], request: EvaluateRequest | TuneRequest, own_site: str, own_key: crypto.VerifyKey,
    key_dir: Path, policy: SitePolicy,
) -> list[SiteSet]:
    """The pooled sets as ``(site id, images, labels, soft labels or None)``, once each is a genuine set this site
    trusts (a soft label that is not a probability vector is refused as the set is parsed).

    Raises:
        UntrustedPool: a set signed by a key that is neither this site's nor a pinned peer's, under another
            site id than its pin, for another run or dataset, a second set of one site, or a pool over the cap.
        InvalidBundle: a set that does not verify or parse, or images the global model cannot train on.
    """
    if not forwarded:
        raise InvalidBundle("the scoring request carries no pooled sets")
    if len(forwarded) > MAX_SETS:
        raise UntrustedPool(f"the pool holds {len(forwarded)} sets, more than {MAX_SETS}")
    peers = load_peers(key_dir)
    own = crypto.fingerprint(own_key)
    spec = request.model
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    for index, data in enumerate(forwarded):
        entry = ForwardedSet.from_bytes(data)
        key = entry.signer_fingerprint
        pinned = own_site if key == own else peers.site_of(key)
        if pinned is None:
            raise UntrustedPool(f"pooled set {index} is signed by a key this site has not pinned as a peer "
                                f"(fingerprint {key[:16]}...); nothing was scored")
        try:
            manifest, images, labels, soft = entry.open()
        except VerificationError:
            raise UntrustedPool(f"pooled set {index} does not carry its signer's signature; nothing was scored") from None
        for what, got, want in (("site", manifest.site_id, pinned), ("run", manifest.run_id, request.run_id),
                                ("dataset", manifest.dataset, request.dataset)):
            if got != want:
                raise UntrustedPool(f"pooled set {index} is signed for {what} {got!r}, not {want!r}")
        if pinned in sets:
            raise UntrustedPool(f"the pool holds two sets of site {pinned!r}")
        shape = (spec.in_channels, spec.image_size, spec.image_size)
        if tuple(manifest.image_shape) != shape or manifest.num_classes != spec.num_classes:
            raise InvalidBundle(f"pooled set {index} is not of the global model's images and classes")
        if labels.size and (labels.max() >= spec.num_classes or not np.isfinite(images).all()
                            or np.abs(images).max() > MAX_ABS_PIXEL):
            raise InvalidBundle(f"pooled set {index} holds a label or pixel out of bounds")
        sets[pinned] = (images, labels, soft)
    total = sum(len(labels) for _, labels, _ in sets.values())
    if total > policy.max_pool_images:
        raise UntrustedPool(f"the pool holds {total} images, more than this site's limit of "
                            f"{policy.max_pool_images} (max_pool_images)")
    return [(site, *arrays) for site, arrays in sets.items()]


def scored_model(
    sets: list[SiteSet], request: EvaluateRequest | TuneRequest, cache_dir: Path,
    device: torch.device, check: Callable[[], None] | None = None,
) -> ConvNet:
    """The global model trained here on ``sets`` as the request says (with its class weights, if any), from the
    cache when the same sets and training were asked for before. No logit shift is applied here."""
    weights = None if request.class_weights is None else torch.tensor(request.class_weights, dtype=torch.float32)
    digest = _training_digest(sets, request)
    path = cache_dir / "scored-models" / f"{digest}.pt"
    model = build_model(request.model)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    images, labels, targets = pooled_arrays(sets, request.model.num_classes)
    log.info("training the global model here on %d pooled images from %d sites (%d epochs)", len(labels), len(sets),
             request.training.epochs)
    model = train_on_pool(images, labels, request.model, request.training.settings(), device, weights, check, targets)
    state = model.state_dict()
    write_atomically(path, lambda target: torch.save(state, target))
    for old in sorted(path.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime)[:-_KEPT_MODELS]:
        old.unlink(missing_ok=True)
    return model


def _training_digest(sets: list[SiteSet], request: EvaluateRequest | TuneRequest) -> str:
    """What a trained model depends on: the sets (by site, in pool order), the model, the training and weights."""
    digest = hashlib.sha256()
    for site, images, labels, soft in sorted(sets, key=lambda s: s[0]):
        digest.update(site.encode() + b"\0" + hashlib.sha256(images.tobytes()).digest()
                      + hashlib.sha256(labels.tobytes()).digest()
                      + (b"" if soft is None else hashlib.sha256(soft.tobytes()).digest()))
    digest.update(request.model.model_dump_json().encode() + request.training.model_dump_json().encode())
    digest.update(repr(request.class_weights).encode())
    return digest.hexdigest()
