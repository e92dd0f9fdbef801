"""The site policy file (validation, local detail), every cost cap, the time limit's setting, `policy init/show`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import RunConfig
from shared.errors import ConfigError, LocalConfigError, PolicyError
from shared.methods import DCConfig, DistillMethod, DMConfig, DPDMConfig, IDMConfig, MTTConfig, NetworkSpec
from shared.schemas import DistillRequest, ModelSpec
from site_agent.cli import app
from site_agent.policy import SitePolicy, describe
from tests.conftest import make_request

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"max_ipc": "lots"}', "policy file is not a valid policy: field 'max_ipc'"),
        ('{"max_ipcs": 5}', r"unknown key 'max_ipcs'; did you mean 'max_ipc'\?"),
        ('{"mtt": {"max_syn_step": 0}}', r"unknown key 'mtt.max_syn_step'; did you mean 'mtt.max_syn_steps'\?"),
        ('{"privacy": {"qqq": 1}}', r"unknown key 'privacy.qqq'$"),  # nothing close: no guess
        ('{"mtt": {"max_syn_steps": 0}}', "field 'mtt.max_syn_steps'"),
        ('{"idm": {"max_train_steps": 0}}', "field 'idm.max_train_steps'"),
        ('{"max_seconds": -1}', "field 'max_seconds'"),
        ('{"allowed_methods": ["dc", "gan"]}', "field 'allowed_methods.1'"),
        ('{"max_ipc": 5,}', r"not JSON \(line 1"),
    ],
)
def test_policy_file_errors_name_the_field(tmp_path: Path, text: str, match: str) -> None:
    """A bad policy file is a ConfigError naming the first bad field (or where the JSON breaks), never the file."""
    (tmp_path / "policy.json").write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        SitePolicy.from_file(tmp_path / "policy.json")
    assert "policy.json" not in str(info.value) and str(tmp_path) not in str(info.value)
    assert isinstance(info.value, LocalConfigError) and str(tmp_path / "policy.json") in info.value.local_detail


def test_a_policy_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    """Found by tests/test_fuzz_doors.py: a non-UTF-8 byte raised UnicodeDecodeError."""
    (tmp_path / "policy.json").write_bytes(b'{"max_ipc": 5\x80}')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 13\)"):
        SitePolicy.from_file(tmp_path / "policy.json")


def test_missing_policy_file_is_named_only_locally(tmp_path: Path) -> None:
    """The message, which can reach the coordinator, names no file; the local detail and the CLI's text do."""
    path = tmp_path / "Doe_Jane_policy.json"
    with pytest.raises(LocalConfigError, match="the site's policy file is missing") as info:
        SitePolicy.from_file(path)
    assert "Doe_Jane" not in str(info.value) and str(tmp_path) not in str(info.value)
    assert str(path) in info.value.local_detail and str(path) in info.value.diagnostics()


# One row per cap: the request that goes one past the default cap, and the words of the refusal.
CAPS = [
    (DCConfig(ipc=51), "ipc 51 exceeds this site's limit of 50 (max_ipc)"),
    (DMConfig(iterations=5001), "iterations 5001 exceeds this site's limit of 5000 (max_iterations)"),
    (DMConfig(batch_real=257), "batch_real 257 exceeds this site's limit of 256 (max_batch_real)"),
    (DCConfig(batch_real=257), "batch_real 257 exceeds this site's limit of 256 (max_batch_real)"),
    (IDMConfig(batch_real=257), "batch_real 257 exceeds this site's limit of 256 (max_batch_real)"),
    (IDMConfig(network=NetworkSpec(width=129)), "network width 129 exceeds this site's limit of 128 (max_net_width)"),
    (DPDMConfig(network=NetworkSpec(depth=5)), "network depth 5 exceeds this site's limit of 4 (max_net_depth)"),
    (DCConfig(outer_loop=51), "dc outer_loop 51 exceeds this site's limit of 50 (dc.max_outer_loop)"),
    (DCConfig(inner_loop=51), "dc inner_loop 51 exceeds this site's limit of 50 (dc.max_inner_loop)"),
    (IDMConfig(queue_size=101), "idm queue_size 101 exceeds this site's limit of 100 (idm.max_queue_size)"),
    (IDMConfig(models_trained=5), "idm models_trained 5 exceeds this site's limit of 4 (idm.max_models_trained)"),
    (IDMConfig(train_steps=11), "idm train_steps 11 exceeds this site's limit of 10 (idm.max_train_steps)"),
    (IDMConfig(train_batch=257), "idm train_batch 257 exceeds this site's limit of 256 (idm.max_train_batch)"),
    (MTTConfig(syn_steps=51), "mtt syn_steps 51 exceeds this site's limit of 50 (mtt.max_syn_steps)"),
    (MTTConfig(num_experts=21), "mtt num_experts 21 exceeds this site's limit of 20 (mtt.max_num_experts)"),
    (MTTConfig(train_epochs_expert=51), ("mtt train_epochs_expert 51 exceeds this site's limit of 50 "
     "(mtt.max_train_epochs_expert)")),
]


@pytest.mark.parametrize(("config", "refusal"), CAPS, ids=[f"{c.method.value}: {m.split(' exceeds')[0]}" for c, m in CAPS])
def test_each_cost_cap_refuses_by_name(config, refusal: str) -> None:
    """Every knob that scales a request's cost has a cap, and a request one past it is refused naming the cap;
    a simulated site (one operator plays every role) takes the run's own settings."""
    request = make_request().model_copy(update={"distill": config})
    with pytest.raises(PolicyError, match=re.escape(refusal)):
        SitePolicy().check(request)
    SitePolicy.permissive(allow_real_init=False).check(request)


def test_dc_loops_left_to_the_paper_are_capped_at_the_loops_that_would_run() -> None:
    """DC's 0 means the paper's loops for the ipc (inner 50 at ipc 10): a site that caps the inner loop lower
    refuses it by the value that would run."""
    request = make_request().model_copy(update={"distill": DCConfig(ipc=10, outer_loop=0, inner_loop=0)})
    SitePolicy().check(request)
    with pytest.raises(PolicyError, match=r"dc inner_loop 50 exceeds this site's limit of 20 \(dc.max_inner_loop\)"):
        SitePolicy.model_validate({"dc": {"max_inner_loop": 20}}).check(request)


def test_a_refinement_rounds_global_model_is_capped_like_the_network() -> None:
    """From round 2 the request also names the global model's network, which the site runs as a guide."""
    wide = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(width=1024))
    request = DistillRequest(run_id="run-1", nonce="ab" * 32, dataset="breastmnist", distill=IDMConfig(), round=2,
                             global_model=wide)
    with pytest.raises(PolicyError, match=r"global_model.network width 1024 .* \(max_net_width\)"):
        SitePolicy().check(request)


def test_a_hostile_coordinators_idm_request_is_refused() -> None:
    """IDM (the default method) with 1000 training steps of 100,000 images on a width-1024 network passes the
    request schema, but no default site runs it."""
    hostile = IDMConfig(train_steps=1000, train_batch=100_000, network=NetworkSpec(width=1024, depth=6),
                        queue_size=1000, models_trained=1000, batch_real=100_000)
    with pytest.raises(PolicyError, match="exceeds this site's limit"):
        SitePolicy().check(make_request().model_copy(update={"distill": hostile}))
    for change in ({"train_steps": 1000}, {"train_batch": 100_000}, {"network": NetworkSpec(width=1024)}):
        with pytest.raises(PolicyError, match="exceeds this site's limit"):
            SitePolicy().check(make_request().model_copy(update={"distill": IDMConfig(**change)}))


def _coordinators_request(config: RunConfig, round: int = 1) -> DistillRequest:
    """The request coordinator/server_app.py builds from a run config (its global model spec from round 2)."""
    spec = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=config.network()) if round > 1 else None
    return DistillRequest(run_id="run-1", nonce="ab" * 32, dataset=config.dataset, distill=config.distill_config(),
                          round=round, global_model=spec)


@pytest.mark.parametrize("method", list(DistillMethod))
def test_the_default_policy_accepts_the_default_run_of_every_method(method: DistillMethod) -> None:
    """Each method's CPU preset, as the coordinator asks for it by default, passes a default site's policy, also
    in a refinement round; so do the paper's settings the README runs on a GPU (width 128, batch 256, 1000
    iterations, the paper's DC loops)."""
    SitePolicy().check(_coordinators_request(RunConfig(method=method)))
    if method != DistillMethod.DPDM:
        SitePolicy().check(_coordinators_request(RunConfig(method=method, rounds=3), round=2))
    paper = RunConfig(method=method, ipc=10, iterations=1000, net_width=128, batch_real=256, inner_loop=0)
    SitePolicy().check(_coordinators_request(paper))


def test_the_defaults_leave_room_above_the_default_run() -> None:
    """Every cap is at least twice what the default run (IDM's preset) asks for."""
    config = RunConfig().distill_config()
    assert isinstance(config, IDMConfig)
    policy = SitePolicy()
    assert policy.max_net_width >= 2 * config.network.width and policy.max_batch_real >= 2 * config.batch_real
    assert policy.idm.max_train_steps >= 2 * config.train_steps and policy.idm.max_train_batch >= 2 * config.train_batch
    assert policy.idm.max_queue_size >= 2 * config.queue_size and policy.max_iterations >= 2 * config.iterations


def test_time_limit_has_a_default_and_a_simulation_has_none() -> None:
    """max_seconds bounds a whole request (30 minutes unless the site says otherwise); a simulated site has no
    limit of its own, since the run's operator plays the site too."""
    assert SitePolicy().max_seconds == 3600 and SitePolicy(max_seconds=90).max_seconds == 90
    assert SitePolicy(max_seconds=None).max_seconds is None
    assert SitePolicy.permissive(allow_real_init=False).max_seconds is None
    assert "refuses the request, releasing nothing" in SitePolicy.model_fields["max_seconds"].description


def test_describe_lists_every_nested_cap() -> None:
    """`policy show` explains each group's caps as <group>.<field>."""
    names = [name for name, _, _ in describe(SitePolicy())]
    for name in ("max_net_width", "dc.max_outer_loop", "idm.max_train_batch", "mtt.max_num_experts",
                 "privacy.shadow_models", "max_seconds"):
        assert name in names
    assert all(meaning for _, _, meaning in describe(SitePolicy()))


def test_policy_init_then_show(tmp_path: Path) -> None:
    """`policy init` writes the defaults (never over a file); `policy show` validates and explains it."""
    path = tmp_path / "policy.json"
    assert runner.invoke(app, ["policy", "init", "--path", str(path)]).exit_code == 0
    assert SitePolicy.from_file(path) == SitePolicy()
    again = runner.invoke(app, ["policy", "init", "--path", str(path)])
    assert isinstance(again.exception, ConfigError) and "already exists" in str(again.exception)
    shown = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert shown.exit_code == 0 and "require_approval" in shown.output and "mtt.max_syn_steps" in shown.output
    assert "idm.max_train_steps" in shown.output
    path.write_text('{"max_iterations": 0}')
    bad = runner.invoke(app, ["policy", "show", "--path", str(path)])
    assert isinstance(bad.exception, ConfigError) and "max_iterations" in str(bad.exception)


def test_a_model_to_score_larger_than_the_caps_is_refused() -> None:
    """Evaluate and tune score a coordinator's model on every local image: its size is capped like a request's."""
    from shared.methods import NetworkSpec
    from shared.schemas import ModelSpec

    policy = SitePolicy()
    policy.check_scored_model(ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(width=64, depth=3)))
    with pytest.raises(PolicyError, match="max_net_width"):
        policy.check_scored_model(ModelSpec(in_channels=1, num_classes=2, image_size=28,
                                            network=NetworkSpec(width=1024, depth=3)))
