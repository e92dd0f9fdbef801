"""The receive path: every check has a tamper test, and a good bundle round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordinator.receive import Expectation, receive_bundle
from shared.bundle import MAGIC
from shared.datasets import dataset_info
from shared.errors import DecryptionError, InvalidBundle, ReplayError, VerificationError
from shared.methods import DPDMConfig
from shared.schemas import DistillRequest
from site_agent.identity import SiteIdentity
from site_agent.release import seal_release
from tests.conftest import edit_header, make_request, make_synthetic

INFO = dataset_info("breastmnist")
MAX_BYTES = 1 << 20


def _seal(identity: SiteIdentity, request=None, images=None, labels=None) -> bytes:
    request = request or make_request()
    return seal_release(make_synthetic(request, images, labels), request, identity, INFO, num_real_examples=100)


def _expect(request=None) -> Expectation:
    return Expectation(request or make_request(), (1, 28, 28), 2, MAX_BYTES)


def test_good_bundle_round_trips(keys) -> None:
    """A valid bundle opens to the same images (to float16 precision), labels and manifest facts."""
    coordinator, sites = keys
    request = make_request()
    synthetic = make_synthetic(request)
    sealed = seal_release(synthetic, request, sites["site-0"], INFO, num_real_examples=100)
    opened = receive_bundle(sealed, _expect(request), coordinator, set())
    np.testing.assert_allclose(opened.images, synthetic.images.numpy(), atol=1e-2)
    assert opened.labels.tolist() == [0, 0, 1, 1]
    assert opened.manifest.site_id == "site-0" and opened.manifest.class_counts == {0: 2, 1: 2}
    assert opened.manifest.distill == request.distill


def _flip_last_byte(sealed: bytes) -> bytes:
    return sealed[:-1] + bytes([sealed[-1] ^ 0x01])


@pytest.mark.parametrize(
    ("tamper", "error", "match"),
    [
        (_flip_last_byte, DecryptionError, "does not decrypt"),
        (lambda s: edit_header(s, site_id="site-1"), DecryptionError, "does not decrypt"),
        (lambda s: s[:40], InvalidBundle, "out of bounds|truncated"),
        (lambda s: b"GIF89a" + s, InvalidBundle, "magic"),
        (lambda s: s + b"\0" * MAX_BYTES, InvalidBundle, "over the limit"),
        (lambda s: MAGIC + (10**6).to_bytes(4, "big") + s[9:], InvalidBundle, "out of bounds"),
        (lambda s: MAGIC + (5).to_bytes(4, "big") + b"{bad}" + s[9:], InvalidBundle, "malformed"),
    ],
    ids=["flipped-ciphertext-byte", "edited-header", "truncated", "not-a-bundle", "oversize", "bad-length", "bad-header"],
)
def test_tampered_bundles_are_rejected(keys, tamper, error, match) -> None:
    """Flipped bytes, edited headers, truncation, junk and oversize input each fail with a specific error."""
    coordinator, sites = keys
    with pytest.raises(error, match=match):
        receive_bundle(tamper(_seal(sites["site-0"])), _expect(), coordinator, set())


def test_bundle_signed_by_another_sites_key_is_rejected(keys) -> None:
    """site-1 cannot speak for site-0: the signature is checked against site-0's registered key."""
    coordinator, sites = keys
    impostor = SiteIdentity("site-0", sites["site-1"].signing_key, sites["site-1"].coordinator_key)
    with pytest.raises(VerificationError, match="signature"):
        receive_bundle(_seal(impostor), _expect(), coordinator, set())


def test_unregistered_site_is_rejected(keys) -> None:
    """A site id without a registered key is refused before decryption."""
    coordinator, sites = keys
    stranger = SiteIdentity("site-9", sites["site-0"].signing_key, sites["site-0"].coordinator_key)
    with pytest.raises(VerificationError, match="not registered"):
        receive_bundle(_seal(stranger), _expect(), coordinator, set())


def test_bundle_sealed_to_another_coordinator_is_rejected(keys, tmp_path) -> None:
    """A bundle sealed to some other coordinator key does not open here."""
    from coordinator.trust import create_simulation_keys
    from site_agent.identity import load_site_identity

    coordinator, _ = keys
    create_simulation_keys(tmp_path / "other", ["site-0"])
    with pytest.raises((DecryptionError, VerificationError)):
        receive_bundle(_seal(load_site_identity("site-0", tmp_path / "other" / "site-0")), _expect(), coordinator, set())


@pytest.mark.parametrize(
    ("sent_request", "delivered", "match"),
    [
        (make_request(run_id="run-2"), set(), "belongs to run"),
        (make_request(nonce="cd" * 32), set(), "nonce"),
        (make_request(), {"site-0"}, "already delivered"),
    ],
    ids=["other-run", "other-nonce", "second-delivery"],
)
def test_replayed_bundles_are_rejected(keys, sent_request, delivered, match) -> None:
    """A bundle from another run, for another nonce, or a second one from the same site is a replay."""
    coordinator, sites = keys
    sealed = _seal(sites["site-0"], make_request())
    with pytest.raises(ReplayError, match=match):
        receive_bundle(sealed, _expect(sent_request), coordinator, delivered)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.full((4, 1, 28, 28), np.nan, np.float32), [0, 0, 1, 1], "NaN"),
        (np.full((4, 1, 28, 28), 5e3, np.float32), [0, 0, 1, 1], "exceed"),
        (np.full((4, 1, 28, 28), -64.5, np.float32), [0, 0, 1, 1], r"exceed \+-64"),
        (None, [0, 0, 1, 7], "labels must lie"),
        (None, [0, 0, 0, 1], "more than the requested ipc"),
    ],
    ids=["nan-images", "huge-values", "beyond-the-pixel-cap", "label-out-of-range", "too-many-per-class"],
)
def test_bad_contents_are_rejected(keys, images, labels, match) -> None:
    """A correctly signed bundle with bad contents is still rejected, naming the problem."""
    coordinator, sites = keys
    request = make_request()
    synthetic = make_synthetic(request, images, labels)
    from shared.bundle import encode_payload, seal_bundle
    from site_agent.release import build_manifest

    # Build the manifest by hand: seal_release itself refuses non-finite sets.
    payload = encode_payload(synthetic.images.numpy(), synthetic.labels.numpy())
    manifest = build_manifest(synthetic, request, sites["site-0"], INFO, 100, payload)
    sealed = seal_bundle(manifest, payload, sites["site-0"].signing_key, sites["site-0"].coordinator_key)
    with pytest.raises(InvalidBundle, match=match):
        receive_bundle(sealed, _expect(request), coordinator, set())


def test_other_dataset_or_settings_are_rejected(keys) -> None:
    """A bundle for the request's nonce but another dataset or other settings than requested is refused."""
    coordinator, sites = keys
    sealed = _seal(sites["site-0"], make_request(ipc=3))
    request = make_request(ipc=2)
    with pytest.raises(ReplayError, match="nonce"):  # another nonce is a replay, whatever the settings
        receive_bundle(sealed, _expect(request.model_copy(update={"nonce": "ef" * 32})), coordinator, set())
    # Same nonce from here on: the bundle opens and its signed manifest is compared with the request.
    with pytest.raises(InvalidBundle, match="settings differ"):
        receive_bundle(sealed, _expect(request), coordinator, set())
    same_shape = make_request(ipc=3).model_copy(update={"dataset": "pneumoniamnist"})  # also (1, 28, 28), 2 classes
    with pytest.raises(InvalidBundle, match="bundle dataset is 'breastmnist', 'pneumoniamnist' was requested"):
        receive_bundle(sealed, _expect(same_shape), coordinator, set())


def test_soft_labels_must_be_the_ones_requested_but_a_site_may_decline_them(keys) -> None:
    """A site's teacher settings are signed into its manifest: a set labelled otherwise than asked (or labelled when
    nobody asked) is refused; a set with its classes only, as a site's policy may choose, is accepted."""
    import dataclasses

    from shared.methods import SoftLabelSpec

    coordinator, sites = keys
    asked = make_request().model_copy(update={"soft_labels": SoftLabelSpec(teacher_epochs=30)})
    soft = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])

    def sealed(spec: SoftLabelSpec | None) -> bytes:
        synthetic = make_synthetic(asked)
        if spec is not None:
            synthetic = dataclasses.replace(synthetic, soft_labels=soft, label_spec=spec)
        return seal_release(synthetic, asked, sites["site-0"], INFO, num_real_examples=100)

    opened = receive_bundle(sealed(SoftLabelSpec(teacher_epochs=30)), _expect(asked), coordinator, set())
    assert opened.soft_labels is not None and opened.soft_labels.shape == (4, 2)
    assert receive_bundle(sealed(None), _expect(asked), coordinator, set()).soft_labels is None
    with pytest.raises(InvalidBundle, match="soft labels were made otherwise"):
        receive_bundle(sealed(SoftLabelSpec(teacher_epochs=31)), _expect(asked), coordinator, set())
    with pytest.raises(InvalidBundle, match="soft labels were made otherwise"):
        receive_bundle(sealed(SoftLabelSpec()), _expect(make_request()), coordinator, set())


def test_dpdm_bundle_without_its_guarantee_is_rejected(keys) -> None:
    """A bundle answering a dpdm request must carry the (epsilon, delta) guarantee it was asked for."""
    _, sites = keys
    request = DistillRequest(run_id="run-1", nonce="ab" * 32, dataset="breastmnist",
                             distill=DPDMConfig(ipc=2, iterations=1))
    with pytest.raises(InvalidBundle, match="differential-privacy guarantee"):
        receive_bundle(_seal(sites["site-0"], request), _expect(request), keys[0], set())


def test_the_pixel_cap_admits_every_honest_set_measured_and_the_site_refuses_beyond_it(keys) -> None:
    """43.8 (MTT at a large image step, the largest honest value measured) passes; beyond 64 the site releases nothing."""
    from shared.errors import DataError

    coordinator, sites = keys
    request = make_request()
    honest = np.full((4, 1, 28, 28), 43.8, np.float32)
    honest[0, 0, 0, 0] = -43.8
    opened = receive_bundle(_seal(sites["site-0"], request, honest, [0, 0, 1, 1]), _expect(request), coordinator, set())
    assert float(np.abs(opened.images).max()) == pytest.approx(43.8, abs=0.05)  # float16 on the wire
    with pytest.raises(DataError, match=r"beyond \+-64; nothing was released"):
        _seal(sites["site-0"], request, np.full((4, 1, 28, 28), 65.0, np.float32), [0, 0, 1, 1])
