"""`--download` fetches an official MedMNIST file with medmnist's own downloader and MD5 check (simulations
only; a site never downloads), and `simulate --no-verify-md5` reaches the harness's reads of its data.

No network here: torchvision's URL fetch, which medmnist's downloader calls, is replaced by a copy of the
real file (or of a damaged one); medmnist's and torchvision's own MD5 check still runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torchvision.datasets.utils
from typer.testing import CliRunner

import harness.simulate
import harness.study.runner
from coordinator.cli import app
from harness.sites import run_shares
from harness.source import download_medmnist
from shared.config import RunConfig
from shared.errors import DataError
from site_agent.data import read_local_data
from site_agent.medmnist_files import file_md5

runner = CliRunner()
BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


class _Stop(Exception):
    """Raised by a stand-in for the simulation once it has seen what it came for."""


def _serve(monkeypatch: pytest.MonkeyPatch, source: Path) -> list[str]:
    """Let torchvision's download fetch ``source`` whatever the URL; returns the URLs asked for."""
    asked: list[str] = []

    def fetch(url: str, filename: str, chunk_size: int = 0) -> None:
        asked.append(url)
        shutil.copy(source, filename)

    monkeypatch.setattr(torchvision.datasets.utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve", fetch)
    return asked


def test_download_fetches_the_official_file_into_the_data_root(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """The file lands in the data root (created), MD5 official; a second call finds it there and fetches nothing."""
    asked = _serve(monkeypatch, data_root / "breastmnist.npz")
    path = download_medmnist("breastmnist", str(tmp_path / "root"))
    assert path == tmp_path / "root" / "breastmnist.npz" and file_md5(path) == BREAST_MD5
    assert len(asked) == 1 and "zenodo" in asked[0]
    download_medmnist("breastmnist", str(tmp_path / "root"))
    assert len(asked) == 1


def test_download_defaults_to_medmnist_root(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Without --data-root the file goes where the data is read from: $MEDMNIST_ROOT, else ~/.medmnist."""
    _serve(monkeypatch, data_root / "breastmnist.npz")
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "env-root"))
    assert download_medmnist("breastmnist") == tmp_path / "env-root" / "breastmnist.npz"


def test_a_download_with_the_wrong_md5_is_refused(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """What arrives is checked by medmnist's downloader: damaged bytes are an error that says how to fetch by hand."""
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((data_root / "breastmnist.npz").read_bytes() + b"\0")
    _serve(monkeypatch, damaged)
    with pytest.raises(DataError, match="official MD5") as caught:
        download_medmnist("breastmnist", str(tmp_path / "root"))
    assert BREAST_MD5 in caught.value.hint and "zenodo" in caught.value.hint


def test_download_refuses_a_data_root_that_is_a_file(tmp_path: Path) -> None:
    export = tmp_path / "export.npz"
    export.write_bytes(b"")
    with pytest.raises(Exception, match="into a folder"):
        download_medmnist("breastmnist", str(export))


@pytest.mark.parametrize("command", ["simulate", "study"])
def test_simulate_and_study_download_first_and_say_where(command: str, data_root: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """`--download` runs before the simulation reads anything, and the console names the file."""
    _serve(monkeypatch, data_root / "breastmnist.npz")
    root = tmp_path / "root"
    seen: list[bool] = []

    def first_read(*_args: object, **_kwargs: object) -> None:
        seen.append((root / "breastmnist.npz").is_file())
        raise _Stop

    monkeypatch.setattr(harness.simulate, "simulate", first_read)
    monkeypatch.setattr(harness.study.runner, "run_study", first_read)
    result = runner.invoke(app, [command, "--download", "--data-root", str(root), "--out-dir", str(tmp_path / "out")])
    assert seen == [True] and isinstance(result.exception, _Stop)
    assert f"is at {root / 'breastmnist.npz'}" in result.output


def test_a_site_never_downloads(tmp_path: Path, monkeypatch) -> None:
    """A site's read of a missing official file is an error whose hint says a site does not download."""
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", lambda *a, **k: pytest.fail("a site downloaded"))
    with pytest.raises(DataError, match="not found") as caught:
        read_local_data(tmp_path, "breastmnist")
    assert "--download" in caught.value.hint and "a site never downloads" in caught.value.hint


def test_no_verify_md5_reaches_the_simulations_reads(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A file named like an official one but with other bytes is refused, unless simulate says --no-verify-md5."""
    shutil.copy(data_root / "breastmnist.npz", tmp_path / "breastmnist.npz")
    with (tmp_path / "breastmnist.npz").open("ab") as handle:
        handle.write(b"\0")
    shares: list[int] = []

    def fake(config: RunConfig, verbose: bool = False) -> None:
        shares.append(len(run_shares(config)))  # reads the data as the simulation does before Flower starts
        raise _Stop

    monkeypatch.setattr(harness.simulate, "simulate", fake)
    args = ["simulate", "--data-root", str(tmp_path), "--sites", "2", "--out-dir", str(tmp_path / "out")]
    refused = runner.invoke(app, args)
    assert "not the official" in str(refused.exception) and "--no-verify-md5" in refused.exception.hint
    assert isinstance(runner.invoke(app, [*args, "--no-verify-md5"]).exception, _Stop)
    assert shares == [2]
