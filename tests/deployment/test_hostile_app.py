"""A hostile coordinator's app package cannot run at a hospital: real SuperLink, TLS, node auth, two sites.

The coordinator submits an app package whose ``site_agent/client_app.py`` answers a distill request with
the site's raw training images and consults no policy. Flower's own ``flwr-clientapp`` would install and
import that file. Our sites refuse the run while its package is not pinned; once it is pinned, each site
still answers with the site agent it installed: a normal sealed bundle. Afterwards the SuperLink's
database and the results folder are scanned for the sites' images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from coordinator import control
from coordinator.summary import read_summary
from site_agent import app_pins, audit
from site_agent.audit import AuditEvent
from tests.deployment.live import LiveFederation
from tests.deployment.raw_scan import find_raw_images, stored_files
from tests.deployment.test_live_faults import QUICK

HOSTILE_CLIENT_APP = '''"""Sends the site's raw training images; no policy, no approval, no privacy gate."""
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query("distill")
def distill(msg, context):
    with np.load(Path(context.node_config["data-root"]) / "breastmnist.npz") as data:
        raw = data["train_images"][:16].tobytes()
    return Message(RecordDict({"bundle": ConfigRecord({"sealed": raw}), "metrics": MetricRecord({})}), reply_to=msg)
'''


def hostile_app(fed: LiveFederation) -> Path:
    """The honest app package with the site's ClientApp replaced by one that sends raw images."""
    folder = fed.root / "hostile-app"
    shutil.copytree(fed.app, folder)
    (folder / "site_agent" / "client_app.py").write_text(HOSTILE_CLIENT_APP)
    return folder


@pytest.mark.live
@pytest.mark.flower
@pytest.mark.realdata
def test_a_hostile_app_package_reads_nothing_at_the_site(data_root: Path, tmp_path: Path, processes) -> None:
    names = ["site-a", "site-b"]
    fed = LiveFederation.create(tmp_path, processes, data_root, names, policy=QUICK)
    fed.start_superlink()
    fed.register_nodes(names)
    for index, name in enumerate(names):
        fed.start_supernode(name, index, 2)
    hostile = hostile_app(fed)
    hostile_hash = control.app_hash(hostile)
    fed.app = hostile  # from now on the coordinator submits the hostile package

    # Not pinned: refused at each site before anything of it is read, with the reason sent back and audited.
    refused_run = fed.submit(sites=2, **{"min-sites": 2})
    assert fed.wait(refused_run) == "finished:failed", fed.logs()
    summary = read_summary(fed.out_dir / f"run-{refused_run}")
    assert [s.status for s in summary.sites] == ["rejected", "rejected"]
    assert all("has not pinned the run's app package" in s.reason for s in summary.sites)
    for name in names:
        refusals = [e for e in audit.read_entries(fed.root / f"home-{name}" / "cache")
                    if e.event == AuditEvent.APP_REFUSED]
        assert refusals and refusals[0].details["fab_hash"] == hostile_hash

    # Pinned: the sites serve the study, with their own installed code. What comes back is a sealed bundle.
    for name in names:
        app_pins.pin(fed.sites[name], hostile_hash, note="the coordinator's modified package")
    served_run = fed.submit(sites=2, **{"min-sites": 2})
    assert fed.wait(served_run) == "finished:completed", fed.logs()
    summary = read_summary(fed.out_dir / f"run-{served_run}")
    assert [s.status for s in summary.sites] == ["accepted", "accepted"]

    with np.load(data_root / "breastmnist.npz") as raw:
        images = np.concatenate([raw[f"{split}_images"] for split in ("train", "val", "test")])
    stored = stored_files([tmp_path / "link", fed.out_dir])
    assert find_raw_images(images, stored) == []
