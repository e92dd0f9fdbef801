"""The commands and files behind `site-agent join`, `coordinator serve` and `coordinator run`, and their start checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from coordinator import control
from coordinator.superlink import SuperLinkSettings, exposure_note, superlink_command, superlink_env
from coordinator.tls import issue_tls
from shared import crypto
from shared.config import RunConfig
from shared.errors import ConfigError, DataError, KeyFileError
from shared.keys import (
    COORDINATOR_PUB,
    NODE_KEY,
    SIGNING_PUB,
    SITE_CA_CERT,
)
from site_agent import join
from site_agent.settings import site_settings
from tests.deployment.conftest import export
from tests.deployment.live import PROJECT


def test_supernode_command_has_tls_node_auth_own_port_and_offline_env(site: join.JoinSettings) -> None:
    """TLS against the study CA, node auth with node.key, its own Runtime API port; never --insecure."""
    join.preflight(site)
    command = join.supernode_command(site, Path("/x/node-config.toml"))
    flags = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert Path(command[0]).name == "flower-supernode" and Path(command[0]).is_absolute()
    assert "--insecure" not in command
    # The SuperNode runs no app code; only the site's runner, holding the shared secret, takes its tasks.
    assert flags["--isolation"] == "process"
    assert flags["--superexec-auth-secret-file"] == str(join.secret_file(site))
    runner = join.runner_command(site)
    assert runner[:3] == [sys.executable, "-m", "site_agent.task_runner"]
    assert "127.0.0.1:9611" in runner and str(join.secret_file(site)) in runner
    assert flags["--superlink"] == "link.example.org:443"
    assert flags["--root-certificates"] == str((site.key_dir / SITE_CA_CERT).resolve())
    assert flags["--auth-supernode-private-key"] == str((site.key_dir / NODE_KEY).resolve())
    assert flags["--port"] == "9611" and flags["--host"] == "127.0.0.1"
    assert "--max-retries" not in command  # Flower's default: reconnect without limit
    env = join.supernode_env(site)
    assert env["FLWR_HOME"] == str(site.home()) and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1" and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"


def test_node_config_file_round_trips_into_site_settings(site: join.JoinSettings) -> None:
    """The node config file parses back (as Flower reads it) into the site's own settings, paths intact."""
    values = tomllib.loads(join.write_node_config(site).read_text())
    settings = site_settings(values)
    assert settings.site_id == "st-marys"
    assert settings.key_dir == site.key_dir.resolve() and settings.data_root == str(site.data.resolve())


@pytest.mark.parametrize(
    ("breakage", "error", "match"),
    [
        (lambda s: shutil.rmtree(s.key_dir), KeyFileError, "key directory .* does not exist"),
        (lambda s: (s.key_dir / "signing.key").unlink(), KeyFileError, "signing key file not found"),
        (lambda s: (s.key_dir / NODE_KEY).unlink(), KeyFileError, "SuperNode key file not found"),
        (lambda s: (s.key_dir / COORDINATOR_PUB).unlink(), KeyFileError, "pinned coordinator key.*not found"),
        (lambda s: shutil.copyfile(s.key_dir / SIGNING_PUB, s.key_dir / COORDINATOR_PUB), KeyFileError,
         "pinned coordinator key.*Ed25519PublicKey"),
        (lambda s: (s.key_dir / SITE_CA_CERT).unlink(), KeyFileError, "certificate file not found"),
    ],
    ids=["no-key-dir", "no-signing-key", "no-node-key", "no-coordinator-key", "wrong-coordinator-key", "no-ca"],
)
def test_preflight_names_what_is_missing(site: join.JoinSettings, breakage, error, match) -> None:
    """Each missing or wrong piece fails before anything starts, with a message naming it."""
    breakage(site)
    with pytest.raises(error, match=match):
        join.preflight(site)


def test_preflight_checks_the_coordinator_fingerprint_when_given(site: join.JoinSettings) -> None:
    """A pinned key that is not the one read out of band stops the join."""
    with pytest.raises(KeyFileError, match="fingerprint"):
        join.preflight(site.model_copy(update={"coordinator_fingerprint": "00" * 32}))


def test_bad_join_options_are_config_errors() -> None:
    """Options are checked at the door, naming the option."""
    with pytest.raises(ConfigError, match="--superlink"):
        join.settings_from_options({"site_id": "a", "key_dir": Path("k"), "superlink": "no-port"})
    with pytest.raises(ConfigError, match="--site-id"):
        join.settings_from_options({"site_id": "../a", "key_dir": Path("k"), "superlink": "h:1"})


def test_superlink_command_has_tls_auth_database_and_no_installs(tmp_path: Path) -> None:
    """SuperLink: TLS files from the key dir, node auth on, state database, no runtime dependency installs."""
    settings = SuperLinkSettings(keys_dir=tmp_path / "coord", state_dir=tmp_path / "state", port=9700)
    with pytest.raises(KeyFileError, match="no TLS certificate"):
        superlink_command(settings)
    issue_tls(tmp_path / "coord", ["link.example.org"])
    command = superlink_command(settings)
    flags = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert "--enable-supernode-auth" in command and "--disable-runtime-dependency-installation" in command
    assert "--insecure" not in command
    assert flags["--ssl-certfile"].endswith("tls/server.crt") and flags["--ssl-keyfile"].endswith("tls/server.key")
    assert flags["--database"] == str((tmp_path / "state" / "state.db").resolve()) and flags["--port"] == "9700"
    assert superlink_env(settings)["FLWR_HOME"] == str((tmp_path / "state" / "flwr-home").resolve())


def test_connection_is_written_to_flwr_home_keeping_other_connections(tmp_path: Path) -> None:
    """The connection goes into FLWR_HOME/config.toml; existing entries (e.g. 'local') survive."""
    home = tmp_path / ".flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    conn = control.Connection("link.example.org:443", tmp_path / "ca.crt", home)
    config = tomllib.loads(control.write_connection(conn).read_text())
    assert config["superlink"]["default"] == "local" and config["superlink"]["local"] == {"address": ":local:"}
    assert config["superlink"]["feddistill"] == {"address": "link.example.org:443",
                                                 "root-certificates": str((tmp_path / "ca.crt").resolve())}


def test_run_config_file_and_command(tmp_path: Path) -> None:
    """Run settings travel as a TOML file that parses back into the same RunConfig."""
    conn = control.Connection("h:1", tmp_path / "ca.crt", tmp_path / "home")
    config = RunConfig.from_flower({"keys-dir": "/srv/keys", "out-dir": "/srv/results", "ipc": 2, "sites": 3})
    path = control.write_run_config(conn, config, "r1")
    assert RunConfig.from_flower(tomllib.loads(path.read_text())) == config
    assert control.run_args(conn, tmp_path, path) == ["run", str(tmp_path), "feddistill", "--run-config", str(path)]


def test_an_unreachable_superlink_is_an_error_naming_it(tmp_path: Path) -> None:
    """`flwr` exits 0 with {"success": false} when the SuperLink is down: status and run must still fail, clearly."""
    from typer.testing import CliRunner

    from coordinator.cli import app

    ca = crypto.new_certificate_authority("test CA")
    crypto.save_certificate(ca.certificate, tmp_path / "ca.crt")
    conn = control.Connection("127.0.0.1:9", tmp_path / "ca.crt", tmp_path / "home")  # nothing listens on port 9
    with pytest.raises(control.ControlError, match="SuperLink at 127.0.0.1:9 cannot be reached"):
        control.list_runs(conn)
    with pytest.raises(control.ControlError, match="`flwr run .*` failed: .*Flower App configuration"):
        control.submit_run(conn, tmp_path, tmp_path / "run.toml")  # an answer without a run id is an error too
    result = CliRunner().invoke(app, ["status", "--superlink", "127.0.0.1:9", "--root-certificates",
                                      str(tmp_path / "ca.crt"), "--flwr-home", str(tmp_path / "home")])
    assert result.exit_code != 0 and "cannot be reached" in str(result.exception)


def test_app_dir_with_federations_is_refused(tmp_path: Path) -> None:
    """`flwr run` would rewrite a pyproject with [tool.flwr.federations]; we refuse it instead."""
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app]\npublisher = 'x'\n[tool.flwr.federations]\ndefault = 'a'\n")
    with pytest.raises(ConfigError, match="federations"):
        control.check_app_dir(tmp_path)
    assert control.check_app_dir(Path(__file__).resolve().parents[2]).name  # the project itself is fine


def test_supernode_is_restarted_after_a_lost_link_but_not_after_a_config_error(
    site: join.JoinSettings, tmp_path: Path, monkeypatch
) -> None:
    """Flower code 305 (link lost / not registered) restarts the SuperNode; 302 (bad auth key) stops with an error."""
    calls = tmp_path / "calls"
    fake = tmp_path / "fake-supernode"
    # Like flower-supernode: logs "Exit Code: <Flower code>" and exits 1 (0 for code 0), taking the codes
    # from $CODES, one per start; records its arguments.
    fake.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\nn=$(wc -l < "$CALLS")\ncode=$(echo "$CODES" | cut -d" " -f$n)\n'
                    '[ "$code" = 0 ] && exit 0\necho "ERROR: Exit Code: $code"\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(join, "SUPERNODE", str(fake))
    monkeypatch.setattr(join, "_BACKOFF_START", 0.01)
    # The runner beside it is not what this test is about; a stand-in spares six Python start-ups.
    monkeypatch.setattr(join, "runner_command", lambda _settings: ["sleep", "60"])
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("CODES", "305 305 0")
    assert join.run_supernode(site) == 0
    assert len(calls.read_text().splitlines()) == 3 and "--auth-supernode-private-key" in calls.read_text()

    calls.unlink()
    monkeypatch.setenv("CODES", "302 0")
    with pytest.raises(ConfigError, match="code 302"):
        join.run_supernode(site)
    calls.unlink()
    monkeypatch.setenv("CODES", "305 0")
    assert join.run_supernode(site, restart=False) == join.CONNECTION_ERROR


def test_preflight_checks_the_data_as_site_agent_check_does(site: join.JoinSettings, tmp_path: Path) -> None:
    """join starts only on data `site-agent check` passes: readable images, and a class the policy lets it distill."""
    with pytest.raises(ConfigError, match="no --data"):
        join.preflight(site.model_copy(update={"data": None}))
    (tmp_path / "notes.txt").write_text("not images")
    with pytest.raises(DataError, match="expected a .npz file"):
        join.preflight(site.model_copy(update={"data": tmp_path / "notes.txt"}))
    with pytest.raises(DataError, match="does not exist"):
        join.preflight(site.model_copy(update={"data": tmp_path / "missing"}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nor a folder of class images"):
        join.preflight(site.model_copy(update={"data": tmp_path / "empty"}))
    unreadable = tmp_path / "folder" / "train" / "0_benign"
    unreadable.mkdir(parents=True)
    (unreadable / "scan.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be read|not an image|unreadable"):
        join.preflight(site.model_copy(update={"data": tmp_path / "folder"}))
    with pytest.raises(ConfigError, match="--dataset"):  # a folder says nothing of its classes and channels
        join.preflight(site.model_copy(update={"data": tmp_path / "folder", "dataset": None}))
    few = export(tmp_path / "few.npz", per_class=(3, 4))  # the built-in policy needs 10 per class
    with pytest.raises(DataError, match="not fit to distill.*at least 10") as caught:
        join.preflight(site.model_copy(update={"data": few}))
    assert "site-agent check --data" in caught.value.hint
    shutil.copyfile(site.data, tmp_path / "empty" / "breastmnist.npz")  # an export posing as the official file
    with pytest.raises(DataError, match="MD5"):
        join.preflight(site.model_copy(update={"data": tmp_path / "empty"}))


def test_join_names_its_data_option_as_check_and_distill_do(site: join.JoinSettings, monkeypatch) -> None:
    """`site-agent join --data`; the old `--data-root` still works, hidden from the help; both at once are refused."""
    from typer.testing import CliRunner

    from site_agent.cli import app

    checked = []
    monkeypatch.setattr(join, "preflight", checked.append)
    base = ["join", "--site-id", "st-marys", "--key-dir", str(site.key_dir), "--superlink", "h:1", "--dry-run"]
    for flag in ("--data", "--data-root"):
        assert CliRunner().invoke(app, [*base, flag, str(site.data)]).exit_code == 0
    assert [s.data for s in checked] == [site.data, site.data]
    both = CliRunner().invoke(app, [*base, "--data", "a", "--data-root", "b"])
    assert isinstance(both.exception, ConfigError) and "old name of --data" in str(both.exception)
    shown = CliRunner().invoke(app, ["join", "--help"], terminal_width=200).output
    assert "--data " in shown and "--data-root" not in shown


def test_the_app_package_the_superlink_stores_holds_only_the_three_packages() -> None:
    """The FAB `coordinator run` submits is what every SuperNode receives: no docs, tests, scripts or README."""
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(PROJECT))).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {".info", "pyproject.toml", "shared", "site_agent", "coordinator"}, tops
    assert "site_agent/client_app.py" in names and "coordinator/server_app.py" in names
    assert all(name.endswith(".py") for name in names if "/" in name and not name.startswith(".info"))


def test_entry_points_find_flower_beside_their_interpreter_without_the_venv_on_path(
    site: join.JoinSettings, tmp_path: Path
) -> None:
    """As systemd starts them: the venv's entry point by absolute path, its bin/ not on PATH."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    joined = subprocess.run([str(bin_dir / "site-agent"), "join", "--site-id", "st-marys", "--key-dir",
                             str(site.key_dir), "--superlink", "h:1", "--data", str(site.data), "--dataset",
                             "breastmnist", "--flwr-home", str(tmp_path / "home"), "--dry-run"],
                            env=env, capture_output=True, text=True, check=False)
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.split()[0] == str(bin_dir / "flower-supernode")
    issue_tls(tmp_path / "coord", [])
    served = subprocess.run([str(bin_dir / "coordinator"), "serve", "--key-dir", str(tmp_path / "coord"),
                             "--state-dir", str(tmp_path / "state"), "--dry-run"],
                            env=env, capture_output=True, text=True, check=False)
    assert served.returncode == 0, served.stderr
    command = served.stdout.split()
    assert command[0] == str(bin_dir / "flower-superlink")
    assert command[command.index("--host") + 1] == "127.0.0.1"  # loopback unless told otherwise


def test_serve_says_what_its_address_exposes(tmp_path: Path) -> None:
    local = SuperLinkSettings(keys_dir=tmp_path, state_dir=tmp_path)
    assert local.host == "127.0.0.1" and "loopback only" in exposure_note(local)
    for host in ("0.0.0.0", "10.1.2.3", "link.example.org"):
        note = exposure_note(local.model_copy(update={"host": host}))
        assert note.startswith("warning") and "no authentication" in note and "/v1/control/*" in note
