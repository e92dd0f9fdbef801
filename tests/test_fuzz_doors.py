"""Fuzzing every other door: whatever a file or a config holds, the parser raises only the project's own errors.

The doors: the site policy file, the coordinator's trust store (site and SuperNode key files), the
node config a SuperNode passes to the ClientApp, Flower's run config, and the data `site-agent
check` reads (.npz exports and image folders). Each gets structured junk (JSON or TOML values of every
type, in the right places and the wrong ones) and raw byte mutations of a valid file. Any other
exception, or an input that takes over ``deadline`` to refuse, is a bug. ``FUZZ_EXAMPLES`` raises the
number of inputs per door, as for the bundle fuzzer (tests/coordinator/test_fuzz_bundle.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.trust import load_coordinator_keys, register_site
from shared.config import RunConfig
from shared.errors import FedDistillError
from shared.keys import NODES, SITES, create_coordinator_key, create_site_keys
from site_agent.check import check_data
from site_agent.policy import SitePolicy
from site_agent.settings import site_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2), derandomize=not os.environ.get("FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow], database=None)

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=15)


def _keys_of(model: type) -> st.SearchStrategy[str]:
    """A model's own field names (kebab and snake case) mixed with arbitrary ones."""
    names = list(model.model_fields)
    return st.sampled_from(names + [n.replace("_", "-") for n in names]) | st.text(max_size=12)


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, truncations and insertions of ``data``."""
    def mutate(edits: list[tuple[int, int]], cut: int) -> bytes:
        out = bytearray(data[: max(1, cut)])
        for position, byte in edits:
            out[position % len(out)] = byte
        return bytes(out)
    return st.builds(mutate, st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
                     st.integers(0, len(data)))


def _refused_cleanly(call, *args) -> None:
    try:
        call(*args)
    except FedDistillError:
        pass


@FUZZ
@given(st.dictionaries(_keys_of(SitePolicy), values, max_size=8) | values)
def test_policy_file(content) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(json.dumps(content, default=str))
        _refused_cleanly(SitePolicy.from_file, path)


@FUZZ
@given(_mutated(SitePolicy().model_dump_json().encode()))
def test_policy_file_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_bytes(content)
        _refused_cleanly(SitePolicy.from_file, path)


@FUZZ
@given(st.dictionaries(_keys_of(RunConfig), scalars, max_size=8))
def test_run_config(run_config) -> None:
    _refused_cleanly(RunConfig.from_flower, run_config)


@FUZZ
@given(st.dictionaries(st.sampled_from(["site-id", "key-dir", "data-root", "policy-file", "device", "cache-dir",
                                        "partition-id", "num-partitions", "data-path"]) | st.text(max_size=10),
                       scalars, max_size=8))
def test_node_config(node_config) -> None:
    _refused_cleanly(site_settings, node_config)


_VALID_KEYS: dict[str, bytes] = {}


def _trust_store_files() -> dict[str, bytes]:
    """A real site signing key and SuperNode key, as `sites add` stores them (made once)."""
    if not _VALID_KEYS:
        with tempfile.TemporaryDirectory() as tmp:
            create_coordinator_key(Path(tmp) / "coord")
            create_site_keys(Path(tmp) / "site")
            register_site(Path(tmp) / "coord", "st-marys", Path(tmp) / "site" / "signing.pub")
            _VALID_KEYS["signing"] = (Path(tmp) / "coord" / SITES / "st-marys.pub").read_bytes()
            _VALID_KEYS["coord"] = Path(tmp, "coord").joinpath("coordinator.key").read_bytes()
            from shared.keys import create_site_identity
            create_site_identity(Path(tmp) / "node")
            _VALID_KEYS["node"] = (Path(tmp) / "node" / "node.pub").read_bytes()
    return _VALID_KEYS


@FUZZ
@given(st.sampled_from(["signing", "node"]), st.data())
def test_trust_store(kind: str, data) -> None:
    valid = _trust_store_files()
    content = data.draw(_mutated(valid[kind]) | st.binary(max_size=300))
    with tempfile.TemporaryDirectory() as tmp:
        coord = Path(tmp) / "coord"
        coord.mkdir()
        (coord / "coordinator.key").write_bytes(valid["coord"])
        (coord / "coordinator.key").chmod(0o600)
        folder = coord / (SITES if kind == "signing" else NODES)
        folder.mkdir()
        (folder / "st-marys.pub").write_bytes(content)
        _refused_cleanly(load_coordinator_keys, coord)


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, train_images=rng.integers(0, 256, (24, 28, 28), dtype=np.uint8),
             train_labels=np.repeat([0, 1], 12), test_images=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             test_labels=np.array([0, 1, 0, 1]))
    return buffer.getvalue()


_NPZ = _npz_bytes()


@FUZZ
@given(_mutated(_NPZ))
def test_check_data_npz_export(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.npz"
        path.write_bytes(content)
        _refused_cleanly(check_data, path, "breastmnist", SitePolicy())


@FUZZ
@given(st.dictionaries(st.sampled_from(["train_images", "train_labels", "test_images", "test_labels", "other"]),
                       st.sampled_from([(0,), (3,), (3, 28, 28), (3, 28, 28, 3), (3, 5, 5), (2, 1), (3, 28)]),
                       max_size=5),
       st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]))
def test_check_data_npz_arrays(shapes, dtype) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.npz"
        np.savez(path, **{key: np.full(shape, 7, dtype=dtype) for key, shape in shapes.items()})
        _refused_cleanly(check_data, path, "breastmnist", SitePolicy())


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["train", "test", "val", "x"]), st.text(min_size=1, max_size=12),
                          st.binary(max_size=200)), max_size=6))
def test_check_data_image_folder(files) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        for split, class_name, content in files:
            safe = "".join(c for c in class_name if c.isalnum() or c in "_-") or "c"
            folder = root / split / safe
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{len(content)}.png").write_bytes(content)
        _refused_cleanly(check_data, root, "breastmnist", SitePolicy())
        shutil.rmtree(root)
