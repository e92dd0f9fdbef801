"""The deployment end to end on 127.0.0.1: a real SuperLink and three SuperNodes, TLS and node authentication.

The processes are started with exactly the commands ``coordinator serve`` and ``site-agent join``
build. Three nodes join: site-a and site-b are honest; the third is registered (as site-c) but
signs its bundle with a stolen copy of site-a's key and claims to be site-a. The run must reject it
with a clear reason and complete with the other two. A fourth node, never registered, is refused by
the SuperLink. Afterwards the SuperLink's state database and the results folder are scanned for raw
images of the sites (``raw_scan``). Every process started here is stopped by PID, the Flower SuperExec children included.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from coordinator.summary import read_summary
from coordinator.tls import issue_tls
from shared import crypto
from shared.keys import COORDINATOR_PUB, SIGNING_KEY, SIGNING_PUB, create_coordinator_key
from tests.deployment.live import LiveFederation, site_key_dir
from tests.deployment.raw_scan import encodings, find_raw_images, stored_files


def test_join_refuses_to_start_without_keys_or_with_a_wrong_coordinator_key(tmp_path: Path) -> None:
    """`site-agent join` with a missing key dir, or a signing key pinned as the coordinator's, exits 1 saying why."""
    coord = tmp_path / "coord"
    create_coordinator_key(coord)
    issue_tls(coord, [])
    base = ["site-agent", "join", "--site-id", "site-a", "--superlink", "127.0.0.1:1", "--dry-run"]
    missing = subprocess.run([*base, "--key-dir", str(tmp_path / "nowhere")], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 1 and "key directory" in missing.stderr and "does not exist" in missing.stderr
    assert "site-agent init" in missing.stderr

    key_dir = site_key_dir(tmp_path, coord, "site-a")
    shutil.copyfile(key_dir / SIGNING_PUB, key_dir / COORDINATOR_PUB)  # the wrong key pinned
    wrong = subprocess.run([*base, "--key-dir", str(key_dir)], capture_output=True, text=True, check=False)
    assert wrong.returncode == 1 and "pinned coordinator key" in wrong.stderr and "Ed25519PublicKey" in wrong.stderr
    assert not list(tmp_path.glob("flwr-home-*"))  # nothing was started or written


@pytest.mark.live
@pytest.mark.flower
@pytest.mark.realdata
def test_deployed_round_with_tls_node_auth_and_an_impostor(data_root: Path, tmp_path: Path, processes) -> None:
    """One full round across real processes: two honest sites accepted, the impostor rejected, results written."""
    names = ["site-a", "site-b", "site-c", "site-d"]  # site-d is never registered
    fed = LiveFederation.create(tmp_path, processes, data_root, names, registered=names[:3])
    sites = fed.sites
    shutil.copyfile(sites["site-a"] / SIGNING_KEY, sites["site-c"] / SIGNING_KEY)  # site-c holds a stolen key
    fed.start_superlink()
    fed.register_nodes(names[:3])  # before the nodes connect

    # The unregistered node is refused by the SuperLink itself (Flower's exit code 305).
    refused = fed.start_supernode("site-d", 0, 3)
    for index, (name, claims) in enumerate([("site-a", "site-a"), ("site-b", "site-b"), ("site-c", "site-a")]):
        fed.start_supernode(name, index, 3, claims=claims)
    assert refused.wait(timeout=120) != 0
    assert "Exit Code: 305" in (tmp_path / "site-d.log").read_text()  # Flower: failed to activate

    run_id = fed.submit()
    status = fed.wait(run_id)
    out_dir, run_dir = fed.out_dir, fed.out_dir / f"run-{run_id}"
    assert status == "finished:completed", fed.logs()

    summary = read_summary(run_dir)
    by_site = {(s.site_id, s.status): s for s in summary.sites}
    assert summary.status == "completed" and summary.sites_accepted == 2
    assert ("site-a", "accepted") in by_site and ("site-b", "accepted") in by_site
    impostor = by_site[("site-c", "rejected")]
    assert "claims site 'site-a'" in impostor.reason and "registered as 'site-c'" in impostor.reason
    assert 0.0 <= summary.global_model.accuracy <= 1.0 and len(summary.per_site) == 3
    for name in ("report.md", "run_config.json", "global_model.pt", "synthetic_grid.png", "state.json",
                 "bundles/site-a.sealed", "bundles/site-b.sealed"):
        assert (run_dir / name).is_file(), name
    assert "site-c" in (run_dir / "report.md").read_text()
    assert not (run_dir / "keys").exists()  # deployment: no simulation keys
    assert crypto.HPKE_SUITE_NAME in (run_dir / "bundles" / "site-a.sealed").read_bytes()[:400].decode(errors="replace")

    # What the SuperLink stored (its state database, WAL included) and what the coordinator wrote hold no raw
    # image of any site in any encoding, nor a site's local path (its data folder, its key folder).
    with np.load(data_root / "breastmnist.npz") as raw:
        images = np.concatenate([raw[f"{split}_images"] for split in ("train", "val", "test")])
    stored = stored_files([tmp_path / "link", out_dir])
    database = next(name for name in stored if name.endswith("state.db"))
    assert len(stored[database]) > 0
    assert find_raw_images(images, stored) == []
    locals_ = (str(data_root.resolve()), str((tmp_path / "data").resolve()),
               *(str(sites[name].resolve()) for name in ("site-a", "site-b", "site-c")))
    for local in locals_:
        assert not [name for name, data in stored.items() if local.encode() in data], local
    # The scan is not vacuous: an image planted in a copy of the database is found, and in its encoding only.
    planted = {**stored, database: stored[database][:1001] + encodings(images[500:501])["float16"][0].tobytes()
               + stored[database][1001:]}
    assert [(f.image, f.encoding, f.where) for f in find_raw_images(images[500:501], planted)] == [
        (0, "float16", database)]
