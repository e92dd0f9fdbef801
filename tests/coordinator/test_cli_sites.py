"""`coordinator sites add/revoke` say what was and was not done on the SuperLink."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.trust import flower_node_of, load_coordinator_keys, record_flower_node
from shared.keys import NODE_PUB, SIGNING_PUB, create_site_identity

runner = CliRunner()


def _coordinator_with_site(tmp_path: Path) -> tuple[Path, list[str]]:
    keys = tmp_path / "coord"
    assert runner.invoke(app, ["init", "--key-dir", str(keys)]).exit_code == 0
    site = tmp_path / "site"
    create_site_identity(site)
    add = ["sites", "add", "--key-dir", str(keys), "--site-id", "site-a", "--signing-key", str(site / SIGNING_PUB),
           "--node-key", str(site / NODE_PUB), "--flwr-home", str(tmp_path / "home")]
    return keys, add


def test_adding_a_site_without_a_superlink_says_its_node_was_not_registered(tmp_path: Path) -> None:
    keys, add = _coordinator_with_site(tmp_path)
    result = runner.invoke(app, add)
    assert result.exit_code == 0, result.output
    assert "NOT registered with a SuperLink" in result.output and "--superlink" in result.output
    assert "site-a" in load_coordinator_keys(keys).sites


def test_revoking_keeps_the_site_when_the_superlink_cannot_unregister_it(tmp_path: Path) -> None:
    """A SuperLink that refuses (here: unreachable) leaves the site registered and says nothing was revoked."""
    from shared import crypto

    keys, add = _coordinator_with_site(tmp_path)
    assert runner.invoke(app, add).exit_code == 0
    record_flower_node(keys, "site-a", 42)
    ca = crypto.new_certificate_authority("test CA")
    crypto.save_certificate(ca.certificate, tmp_path / "ca.crt")
    revoke = ["sites", "revoke", "--key-dir", str(keys), "--site-id", "site-a", "--flwr-home", str(tmp_path / "home")]
    result = runner.invoke(app, [*revoke, "--superlink", "127.0.0.1:9", "--root-certificates", str(tmp_path / "ca.crt")])
    assert result.exit_code != 0 and "nothing revoked" in str(result.exception)
    assert "site-a" in load_coordinator_keys(keys).sites and flower_node_of(keys, "site-a") == 42

    (tmp_path / "home" / "config.toml").unlink()  # no connection at all: revoke here, and say what is left
    result = runner.invoke(app, revoke)
    assert result.exit_code == 0, result.output
    assert "still registered on the SuperLink" in result.output and "flwr supernode unregister 42" in result.output
    assert "site-a" not in load_coordinator_keys(keys).sites


def test_trust_coordinator_never_shows_the_fingerprint_of_a_file_that_does_not_match(tmp_path: Path) -> None:
    """Showing it would let an operator copy it from the screen instead of checking it out of band."""
    from shared import crypto
    from shared.keys import COORDINATOR_PUB
    from site_agent.cli import app as site_app

    keys, _ = _coordinator_with_site(tmp_path)
    actual = crypto.fingerprint(load_coordinator_keys(keys).private_key.public_key())
    pin = ["trust-coordinator", "--key-dir", str(tmp_path / "site"), "--public-key", str(keys / COORDINATOR_PUB)]
    wrong = runner.invoke(site_app, [*pin, "--fingerprint", "ab" * 32])
    assert wrong.exit_code != 0 and "does not match" in str(wrong.exception)
    assert actual not in str(wrong.exception) + wrong.exception.hint + wrong.output
    assert not (tmp_path / "site" / COORDINATOR_PUB).exists()
    spoken = ":".join(actual[i : i + 4] for i in range(0, len(actual), 4)).upper()
    assert runner.invoke(site_app, [*pin, "--fingerprint", spoken]).exit_code == 0
    assert (tmp_path / "site" / COORDINATOR_PUB).is_file()


def test_a_fingerprint_can_be_read_aloud_as_six_groups_of_five_digits(tmp_path: Path) -> None:
    """`coordinator init` prints the digit groups; trust-coordinator takes them; one wrong digit is refused."""
    from shared import crypto
    from shared.keys import COORDINATOR_PUB
    from site_agent.cli import app as site_app

    keys = tmp_path / "coord"
    shown = runner.invoke(app, ["init", "--key-dir", str(keys)])
    assert shown.exit_code == 0, shown.output
    actual = crypto.fingerprint(crypto.load_public_key(keys / COORDINATOR_PUB, crypto.RecipientPublicKey))
    spoken = crypto.speakable(actual)
    assert len(spoken.split()) == 6 and all(len(g) == 5 and g.isdigit() for g in spoken.split())
    assert f"to read aloud over the phone: {spoken}" in shown.output
    pin = ["trust-coordinator", "--key-dir", str(tmp_path / "site"), "--public-key", str(keys / COORDINATOR_PUB)]
    one_off = spoken[:-1] + str((int(spoken[-1]) + 1) % 10)
    assert runner.invoke(site_app, [*pin, "--fingerprint", one_off]).exit_code != 0
    assert not (tmp_path / "site" / COORDINATOR_PUB).exists()
    assert runner.invoke(site_app, [*pin, "--fingerprint", spoken]).exit_code == 0


def test_sites_list_is_a_headed_table_or_json(tmp_path: Path) -> None:
    import json

    keys, add = _coordinator_with_site(tmp_path)
    assert runner.invoke(app, add).exit_code == 0
    record_flower_node(keys, "site-a", 7)
    table = runner.invoke(app, ["sites", "list", "--key-dir", str(keys)])
    assert table.exit_code == 0, table.output
    header, *lines = [line for line in table.output.splitlines() if line.strip() and set(line.strip()) != {"─"}]
    assert header.split() == ["site", "signing", "key", "SuperNode", "key", "SuperLink", "node"]
    assert lines[0].split()[0] == "site-a" and lines[0].split()[-1] == "7"
    rows = json.loads(runner.invoke(app, ["sites", "list", "--key-dir", str(keys), "--json"]).output)
    assert [(r["site"], r["superlink_node"]) for r in rows] == [("site-a", 7)] and rows[0]["signing_key"]


def test_results_lists_each_folder_with_its_pooled_figures(tmp_path: Path) -> None:
    """Each results folder's status and pooled figures; a summary an older version wrote is named, not hidden."""
    import json

    from coordinator.summary import RunStatus, RunSummary
    from shared.config import RunConfig

    config = RunConfig(sites=3)
    done = RunSummary.begun(config, "1", RunStatus.COMPLETED).model_copy(update={"sites_accepted": 3})
    done.global_model = _global_figures(num_examples=156, accuracy=0.76, majority_rate=0.73, balanced_accuracy=0.72,
                                        auc=0.8)
    failed = RunSummary.begun(config, "2", RunStatus.FAILED, "1 valid bundles").model_copy(update={"sites_accepted": 1})
    for name, summary in (("run-1", done), ("run-2", failed)):
        (tmp_path / "out" / name).mkdir(parents=True)
        (tmp_path / "out" / name / "summary.json").write_text(summary.to_json())
    (tmp_path / "out" / "run-0").mkdir()
    (tmp_path / "out" / "run-0" / "summary.json").write_text('{"run_id": "0", "status": "completed"}')
    table = runner.invoke(app, ["results", "--out-dir", str(tmp_path / "out")])
    assert table.exit_code == 0, table.output
    assert "balanced accuracy" in table.output and "0.720" in table.output and "failed" in table.output
    assert "run-0/summary.json" in table.output and "no schema_version" in table.output  # on stderr
    rows = json.loads(runner.invoke(app, ["results", "--out-dir", str(tmp_path / "out"), "--json"]).stdout)
    assert [(r["run_id"], r["status"], r.get("auc")) for r in rows] == [(None, "unreadable", None),
                                                                         ("1", "completed", 0.8), ("2", "failed", None)]
    assert "reads schema_version 1" in rows[0]["error"]
    empty = runner.invoke(app, ["results", "--out-dir", str(tmp_path / "nothing")])
    assert empty.exit_code == 0 and "no results folder" in empty.output


def _global_figures(**figures: float):
    from coordinator.summary import GlobalEvaluation

    return GlobalEvaluation(**{"auc_error_bound": 0.01, "recall": [0.5, 0.5], "class_counts": [78, 78],
                               "confusion": [[39, 39], [39, 39]], "class_names": ["a", "b"], "correction": "none",
                               **figures})


def test_status_of_a_run_still_going_shows_each_site_delivered_or_distilling_and_online(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    """Per registered site its SuperNode's state on the SuperLink; per site of the running run, its progress."""
    import json

    from coordinator import control, run_state
    from tests.conftest import make_request

    keys, add = _coordinator_with_site(tmp_path)
    assert runner.invoke(app, add).exit_code == 0
    other = tmp_path / "site-b"
    create_site_identity(other)
    assert runner.invoke(app, ["sites", "add", "--key-dir", str(keys), "--site-id", "site-b", "--signing-key",
                               str(other / SIGNING_PUB), "--node-key", str(other / NODE_PUB), "--flwr-home",
                               str(tmp_path / "home")]).exit_code == 0
    record_flower_node(keys, "site-a", 7)
    record_flower_node(keys, "site-b", 8)
    run_dir = tmp_path / "results" / "run-5"
    state = run_state.RunState(run_id="run-5", requests={"site-a": make_request(), "site-b": make_request()},
                               expected_site={"site-a": "site-a", "site-b": "site-b"})
    run_dir.mkdir(parents=True)
    run_state.save(run_dir, state)
    run_state.store_bundle(run_dir, "site-a", b"sealed")
    monkeypatch.setattr(control, "list_runs", lambda conn, run_id=None: [{"run-id": "5", "status": "running"}])
    monkeypatch.setattr(control, "results_dir_of", lambda conn, run_id: str(run_dir))
    monkeypatch.setattr(control, "node_statuses", lambda conn: {7: "online", 8: "offline"})
    base = ["status", "--key-dir", str(keys), "--superlink", "127.0.0.1:9", "--root-certificates",
            str(keys / "tls" / "ca.crt"), "--flwr-home", str(tmp_path / "op")]

    shown = runner.invoke(app, [*base, "--json"])
    assert shown.exit_code == 0, (shown.output, shown.exception)
    answer = json.loads(shown.output)
    assert [(s["site"], s["superlink"]) for s in answer["sites"]] == [("site-a", "online"), ("site-b", "offline")]
    progress = {s["site"]: s["status"] for s in answer["runs"][0]["sites"]}
    assert progress == {"site-a": "delivered", "site-b": "distilling"}
    table = runner.invoke(app, base, terminal_width=200).output
    assert "registered sites" in table and "on the SuperLink" in table and "distilling" in table
