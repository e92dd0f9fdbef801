"""Issue 27, part 2, played by a hostile coordinator: a site scores only a model it trains itself on genuine
released sets, so a crafted model (the reconstruction and membership oracles of the issue) is never scored.

The coordinator controls the message: it may send weights, make up a set and sign it with a key of its own,
edit a genuine set, pass off one site's set as another's, replay a set of an earlier run or send one site's set
twice. Each attempt is refused before the site's images are read for it, and audited like any refused request.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

from shared import crypto
from shared.bundle import ForwardedSet, encode_payload, payload_info
from shared.errors import ConfigError, InvalidBundle, PolicyError
from shared.methods import NetworkSpec
from shared.models import build_model
from shared.pooled_training import pooled_arrays, train_on_pool
from shared.schemas import EvaluateReply, EvaluateRequest, ModelSpec
from shared.wire import FieldKey, MessageKind, RecordKey
from site_agent import audit
from site_agent.cli import app
from site_agent.client_app import _pool
from site_agent.handlers import answer_evaluate
from site_agent.peers import load_peers
from site_agent.policy import AnswerLimits, SitePolicy
from site_agent.scored_model import UntrustedPool
from tests.conftest import QUICK_TRAINING, deployed_site, signed_pool

SPEC = ModelSpec(in_channels=1, num_classes=2, image_size=28, network=NetworkSpec(depth=2, width=16))
EXACT = SitePolicy(answers=AnswerLimits(epsilon=None))
runner = CliRunner()


def _request(run_id: str = "run-1", **changes) -> EvaluateRequest:
    return EvaluateRequest(**{"run_id": run_id, "dataset": "breastmnist", "model": SPEC, "training": QUICK_TRAINING,
                              **changes})


def _resigned(data: bytes, key: crypto.SigningKey, signed: bytes | None = None) -> bytes:
    """A forwarded set signed again by ``key`` (the coordinator's own, say), over ``signed`` or its own bytes."""
    entry = ForwardedSet.from_bytes(data)
    body = entry.signed if signed is None else signed
    public = crypto.verify_key_bytes(key.public_key())
    return ForwardedSet(public, crypto.sign(key, body), body).to_bytes()


@pytest.mark.parametrize("soft", [(), ("site-1",)], ids=["classes", "one-site-soft-labelled"])
def test_the_site_scores_the_model_the_coordinator_trains_on_the_same_sets(keys, tmp_path: Path, soft) -> None:
    """The honest path: the site's counts are those of the coordinator's global model, trained here from the
    signed sets, bit for bit on the same machine, soft labels and all."""
    settings = deployed_site(tmp_path, EXACT)
    pool = signed_pool(keys, tmp_path, soft=soft)
    answer = EvaluateReply.model_validate(answer_evaluate(_request(), pool, settings))
    sets = [(m.site_id, *arrays) for m, *arrays in (ForwardedSet.from_bytes(d).open() for d in pool)]
    images, labels, targets = pooled_arrays(sets, SPEC.num_classes)
    assert (targets is None) == (not soft)
    coordinator_model = train_on_pool(images, labels, SPEC, QUICK_TRAINING.settings(), torch.device("cpu"),
                                      targets=targets)
    cached = list((settings.cache_dir / "scored-models").glob("*.pt"))
    site_model = build_model(SPEC)
    site_model.load_state_dict(torch.load(cached[0], weights_only=True))
    assert len(cached) == 1 and all(torch.equal(a, b) for a, b in zip(
        coordinator_model.state_dict().values(), site_model.state_dict().values(), strict=True))
    assert answer.num_examples == 8 and answer.epsilon is None


def test_a_message_with_weights_is_refused_whatever_else_it_carries() -> None:
    """The crafted-model attacks of the issue need the site to score the coordinator's weights: it never does."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # as a run sets it up
    crafted = build_model(SPEC).state_dict()
    msg = Message(RecordDict({RecordKey.ARRAYS: ArrayRecord(crafted),
                              RecordKey.POOL: ConfigRecord({FieldKey.SETS: [b"x"]})}), dst_node_id=1,
                  message_type=MessageKind.EVALUATE.value)
    with pytest.raises(ConfigError, match="scores only a model it trains itself"):
        _pool(msg)
    empty = Message(RecordDict({}), dst_node_id=1, message_type=MessageKind.EVALUATE.value)
    with pytest.raises(ConfigError, match="carries no pooled sets"):
        _pool(empty)


@pytest.mark.parametrize("attempt", ["own key", "edited payload", "another site's name", "earlier run", "twice",
                                     "unpinned peer"])
def test_a_set_the_site_cannot_trust_is_refused_before_anything_is_scored(keys, tmp_path: Path, attempt: str) -> None:
    settings = deployed_site(tmp_path, EXACT)
    pool = signed_pool(keys, tmp_path, pin=attempt != "unpinned peer")
    coordinator_key = crypto.generate_signing_key()  # a sybil: a key no hospital pinned
    if attempt == "own key":  # a made-up set (a target image labelled as the attacker likes), signed by the coordinator
        pool[1] = _resigned(pool[1], coordinator_key)
    elif attempt == "edited payload":
        entry = ForwardedSet.from_bytes(pool[1])
        pool[1] = dataclasses.replace(entry, signed=entry.signed[:-3] + b"\x00\x00\x00").to_bytes()
    elif attempt == "another site's name":  # site-1's genuine set, claimed for site-0's key
        entry = ForwardedSet.from_bytes(pool[1])
        pool[1] = ForwardedSet(ForwardedSet.from_bytes(pool[0]).signer, entry.signature, entry.signed).to_bytes()
    elif attempt == "earlier run":
        pool[1] = signed_pool(keys, tmp_path, run_id="run-0")[1]
    elif attempt == "twice":
        pool = [pool[0], pool[1], pool[1]]
    expected = {"own key": "not pinned as a peer", "edited payload": "does not carry its signer's signature",
                "another site's name": "does not carry its signer's signature", "earlier run": "for run 'run-0'",
                "twice": "two sets of site 'site-1'", "unpinned peer": "not pinned as a peer"}[attempt]
    with pytest.raises(UntrustedPool, match=expected):
        answer_evaluate(_request(), pool, settings)
    assert not (settings.cache_dir / "scored-models").exists()  # no model was trained, nothing was scored
    refused = [e for e in audit.verify(settings.cache_dir) if e.event == "pool_refused"]
    assert len(refused) == 1 and refused[0].run_id == "run-1" and expected in refused[0].details["why"]


def test_a_pool_over_the_policys_size_or_of_other_images_is_refused(keys, tmp_path: Path) -> None:
    settings = deployed_site(tmp_path, SitePolicy(max_pool_images=7, answers=AnswerLimits(epsilon=None)))
    with pytest.raises(PolicyError, match=r"8 images, more than this site's limit of 7 \(max_pool_images\)"):
        answer_evaluate(_request(), signed_pool(keys, tmp_path), settings)
    wide = SPEC.model_copy(update={"in_channels": 3})
    with pytest.raises(PolicyError, match="in_channels 3 is not this site's dataset's"):
        answer_evaluate(_request(model=wide), signed_pool(keys, tmp_path), settings)
    long = QUICK_TRAINING.model_copy(update={"epochs": 5000})
    with pytest.raises(PolicyError, match=r"training epochs 5000 exceeds this site's limit of 1000"):
        answer_evaluate(_request(training=long), signed_pool(keys, tmp_path), settings)
    with pytest.raises(InvalidBundle, match="carries no pooled sets"):
        answer_evaluate(_request(), [], deployed_site(tmp_path, EXACT))


def test_a_pinned_peers_soft_labels_cannot_outweigh_the_other_sites(keys, tmp_path: Path) -> None:
    """A pinned peer (compromised, or colluding with the coordinator) signs a set whose soft labels weigh each of its
    images 50 times: its signature is genuine, its labels are not probabilities, and the site trains nothing."""
    settings = deployed_site(tmp_path, EXACT)
    _, identities = keys
    pool = signed_pool(keys, tmp_path, soft=("site-1",))
    manifest, images, labels, soft = ForwardedSet.from_bytes(pool[1]).open()
    payload = encode_payload(images, labels, soft * 50)
    manifest = manifest.model_copy(update={"payload": payload_info(payload, count=len(labels))})
    body = manifest.model_dump_json().encode()
    signed = len(body).to_bytes(4, "big") + body + payload
    peer = identities["site-1"].signing_key
    pool[1] = ForwardedSet(crypto.verify_key_bytes(peer.public_key()), crypto.sign(peer, signed), signed).to_bytes()
    with pytest.raises(InvalidBundle, match="soft labels must sum to 1"):
        answer_evaluate(_request(), pool, settings)
    assert not (settings.cache_dir / "scored-models").exists()
    refused = [e for e in audit.verify(settings.cache_dir) if e.event == "pool_refused"]
    assert len(refused) == 1 and "soft labels must sum to 1" in refused[0].details["why"]


def test_a_crafted_set_of_a_target_image_buys_no_answer_with_the_whole_lifetime_budget(keys, tmp_path: Path) -> None:
    """The membership attack rebuilt within the protocol: the coordinator makes up a set of copies of a patient's
    image labelled 1 among noise labelled 0, so that the site's own training would make a detector of that image.
    Every one of the lifetime's evaluations is refused (a few asked here stand for all: the refusal does not
    depend on the count), so the attack's advantage is 0."""
    settings = deployed_site(tmp_path, EXACT)
    coordinator_key = crypto.generate_signing_key()
    genuine = signed_pool(keys, tmp_path)
    entry = ForwardedSet.from_bytes(genuine[1])
    refused = 0
    for run in range(5):
        try:
            answer_evaluate(_request(f"run-{run}"), [genuine[0], _resigned(genuine[1], coordinator_key, entry.signed)],
                            settings)
        except UntrustedPool:
            refused += 1
    assert refused == 5 and not (settings.cache_dir / "scored-models").exists()


def test_peers_are_pinned_listed_and_unpinned_by_the_sites_operator(keys, tmp_path: Path) -> None:
    key_dir = tmp_path / "keys" / "site-0"
    _, identities = keys
    fingerprint = crypto.fingerprint(identities["site-1"].signing_key.public_key())
    grouped = ":".join(fingerprint[i:i + 4] for i in range(0, 64, 4)).upper()  # as pasted from a letter
    pinned = runner.invoke(app, ["peers", "pin", "--key-dir", str(key_dir), "--site-id", "site-1",
                                 "--fingerprint", grouped])
    assert pinned.exit_code == 0, pinned.output
    assert load_peers(key_dir).site_of(fingerprint) == "site-1"
    listed = runner.invoke(app, ["peers", "list", "--key-dir", str(key_dir)])
    assert "site-1" in listed.output and fingerprint in listed.output
    twice = runner.invoke(app, ["peers", "pin", "--key-dir", str(key_dir), "--site-id", "site-9",
                                "--fingerprint", fingerprint])
    assert twice.exit_code != 0 and "already pinned for site 'site-1'" in str(twice.exception)  # run_cli prints it
    bad = runner.invoke(app, ["peers", "pin", "--key-dir", str(key_dir), "--site-id", "site-2", "--fingerprint", "123"])
    assert bad.exit_code != 0 and "64 hex digits" in str(bad.exception)
    unpinned = runner.invoke(app, ["peers", "unpin", "--key-dir", str(key_dir), "--site-id", "site-1"])
    assert unpinned.exit_code == 0 and load_peers(key_dir).peers == []
