"""Fuzzing the coordinator's door: whatever bytes arrive, the receive path raises only the project's own errors.

Two generators (hypothesis), both run through ``coordinator.receive.receive_bundle``:

- mutations of a real sealed bundle (flipped, inserted, deleted bytes, truncation, an edited clear
  header): they mostly die at the header or at decryption;
- mutations of a valid bundle's *plaintext* (the manifest JSON, its length prefix, the payload), then
  signed with the site's key and sealed to the coordinator, so the mutation reaches the manifest and
  payload parsers behind decryption and the signature.

Any other exception, or an input that takes over ``deadline`` to refuse, is a bug. The default suite runs
a few hundred inputs of each; ``FUZZ_EXAMPLES=100000 pytest tests/coordinator/test_fuzz_bundle.py``
is the long run recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import struct
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.receive import Expectation, receive_bundle
from shared import crypto
from shared.bundle import MAGIC, BundleHeader, SealedBundle, hpke_info
from shared.datasets import dataset_info
from shared.errors import FedDistillError
from site_agent.release import seal_release
from tests.conftest import make_request, make_synthetic

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2), derandomize=not os.environ.get("FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], database=None)
MAX_BYTES = 1 << 20
_U32 = struct.Struct(">I")

# JSON values that stress a parser: huge and negative numbers, wrong types, deep and long containers.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)


def _refused_cleanly(sealed: bytes, expected: Expectation, keys) -> None:
    try:
        receive_bundle(sealed, expected, keys, set())
    except FedDistillError:
        pass


@pytest.fixture
def door(keys):
    """A valid sealed bundle from site-0, what the coordinator expects of it, and the keys on both ends."""
    coordinator, sites = keys
    request = make_request()
    sealed = seal_release(make_synthetic(request), request, sites["site-0"], dataset_info("breastmnist"),
                          num_real_examples=100)
    expected = Expectation(request, (1, 28, 28), 2, MAX_BYTES)
    receive_bundle(sealed, expected, coordinator, set())  # the unmutated bundle is accepted
    return sealed, expected, coordinator, sites["site-0"]


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "header"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del out[at:]
        elif kind == "header" and len(out) > len(MAGIC) + 4:
            # An edited clear header with a consistent length prefix: it parses, then must fail to decrypt.
            (length,) = _U32.unpack_from(out, len(MAGIC))
            try:
                header = json.loads(bytes(out[len(MAGIC) + 4 : len(MAGIC) + 4 + min(length, 4096)]))
            except ValueError:  # an earlier mutation already broke it
                header = None
            if isinstance(header, dict) and header:
                header[draw(st.sampled_from(sorted(header)))] = draw(json_values)
                raw = json.dumps(header).encode()
                out[len(MAGIC) : len(MAGIC) + 4 + length] = _U32.pack(len(raw)) + raw
    return bytes(out)


@FUZZ
@given(st.data())
def test_mutated_sealed_bundles_are_refused_with_the_projects_errors(door, data: st.DataObject) -> None:
    sealed, expected, coordinator, _ = door
    _refused_cleanly(data.draw(byte_mutations(sealed)), expected, coordinator)


def _plaintext(sealed: bytes, coordinator) -> tuple[dict[str, Any], bytes, BundleHeader]:
    bundle = SealedBundle.from_bytes(sealed)
    signed = crypto.open_sealed(bundle.ciphertext, coordinator.private_key, info=hpke_info(bundle.header_bytes))
    signed_part = signed[: -crypto.SIGNATURE_BYTES]
    (length,) = _U32.unpack_from(signed_part, 0)
    return json.loads(signed_part[4 : 4 + length]), signed_part[4 + length :], bundle.header


def _reseal(manifest_bytes: bytes, payload: bytes, header: BundleHeader, site, length: int | None = None) -> bytes:
    """Sign and seal an arbitrary plaintext exactly as a site would, so it passes decryption and the signature."""
    signed_part = _U32.pack(len(manifest_bytes) if length is None else length) + manifest_bytes + payload
    header_bytes = header.model_dump_json().encode()
    ciphertext = crypto.seal(signed_part + crypto.sign(site.signing_key, signed_part), site.coordinator_key,
                             info=hpke_info(header_bytes))
    return MAGIC + _U32.pack(len(header_bytes)) + header_bytes + ciphertext


def _set_at(tree: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    tree[path[0]] = _set_at(tree[path[0]], path[1:], value)
    return tree


@st.composite
def field_paths(draw: st.DrawFn, tree: Any) -> list[Any]:
    path: list[Any] = []
    while isinstance(tree, dict | list) and tree and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(tree) if isinstance(tree, dict) else range(len(tree))))
        path.append(key)
        tree = tree[key]
    return path or [draw(st.sampled_from(sorted(tree)))] if isinstance(tree, dict) else path


@FUZZ
@given(st.data())
def test_mutated_signed_plaintexts_are_refused_with_the_projects_errors(door, data: st.DataObject) -> None:
    """Behind decryption and a valid signature: a site's own key signing nonsense still cannot crash the door."""
    sealed, expected, coordinator, site = door
    manifest, payload, header = _plaintext(sealed, coordinator)
    manifest_bytes, length = json.dumps(manifest).encode(), None
    kind = data.draw(st.sampled_from(["field", "manifest-bytes", "payload", "length"]))
    if kind == "field":
        path = data.draw(field_paths(manifest))
        manifest_bytes = json.dumps(_set_at(manifest, path, data.draw(json_values))).encode()
    elif kind == "manifest-bytes":
        manifest_bytes = data.draw(byte_mutations(manifest_bytes))
    elif kind == "payload":
        payload = data.draw(byte_mutations(payload))
    else:
        length = data.draw(st.integers(0, 2**32 - 1))
    _refused_cleanly(_reseal(manifest_bytes, payload, header, site, length), expected, coordinator)
