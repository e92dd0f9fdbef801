"""Matching Training Trajectories and its expert cache on tiny generated images (3 classes of 16x16, CPU)."""

from __future__ import annotations

import logging

import pydantic
import pytest
import torch

from shared.errors import DataError
from shared.methods import InitMode
from shared.models import ConvNet
from site_agent.distill import experts, mtt
from site_agent.distill.experts import ExpertSettings, flat_params, load_or_train_experts, unflatten_params
from site_agent.distill.mtt import MTTConfig, distill_mtt
from tests.site_agent.generated import CPU, NET, SIZE, accuracy, data

torch.set_num_threads(1)



def _config(**overrides) -> MTTConfig:
    values = {
        "ipc": 2,
        "iterations": 60,
        "lr_img": 100.0,
        "lr_lr": 1e-6,
        "num_experts": 2,
        "train_epochs_expert": 4,
        "max_start_epoch": 2,
        "expert_epochs": 2,
        "syn_steps": 5,
        "network": NET,
    }
    return MTTConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One expert cache for the module, so the default experts are trained once."""
    return tmp_path_factory.mktemp("experts")


def test_trajectory_loss_decreases(cache_dir):
    """The normalised trajectory loss falls clearly over iterations on separable classes."""
    _, history = distill_mtt(data(40, 0), _config(), 3, CPU, progress=False, expert_cache_dir=cache_dir)
    assert len(history) == 60
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:10]) / 10


def test_output_shape_dtype_finite_and_class_major(cache_dir):
    """Output is (K*ipc, C, H, W) float32 and finite, block k holding the k-th key's class."""
    order = (2, 0, 1)
    real = data(40, 0, order)
    syn, _ = distill_mtt(
        real, _config(ipc=3, iterations=5, init=InitMode.REAL), 3, CPU, progress=False, expert_cache_dir=cache_dir
    )
    assert syn.shape == (9, 1, SIZE, SIZE)
    assert syn.dtype == torch.float32
    assert torch.isfinite(syn).all()
    assert not syn.requires_grad
    class_means = torch.stack([real[c].mean(0).flatten() for c in order])  # in key order
    for k in range(len(order)):
        block_mean = syn[k * 3 : (k + 1) * 3].mean(0).flatten()
        assert torch.cdist(block_mean[None], class_means).argmin().item() == k


def test_synthetic_set_trains_a_classifier(cache_dir):
    """A ConvNet trained only on the synthetic set beats chance (1/3) clearly on held-out data."""
    syn, _ = distill_mtt(data(40, 0), _config(), 3, CPU, progress=False, expert_cache_dir=cache_dir)
    labels = torch.arange(3).repeat_interleave(2)
    assert accuracy(syn, labels) > 0.7


def test_same_seed_same_output(cache_dir):
    """Two runs with the same seed give bit-identical images and losses."""
    real = data(40, 0)
    first, h1 = distill_mtt(real, _config(iterations=5), 3, CPU, progress=False, expert_cache_dir=cache_dir)
    second, h2 = distill_mtt(real, _config(iterations=5), 3, CPU, progress=False, expert_cache_dir=cache_dir)
    uncached, h3 = distill_mtt(real, _config(iterations=5), 3, CPU, progress=False, expert_cache_dir=None)
    assert torch.equal(first, second) and h1 == h2
    assert torch.equal(first, uncached) and h1 == h3  # a cache hit changes nothing downstream


def test_expert_cache_reused_and_rebuilt(tmp_path, monkeypatch):
    """Matching settings and data reuse the cache file; a changed setting or image retrains."""
    calls = []
    original = experts.train_experts

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(experts, "train_experts", counting)
    real = data(20, 0)
    settings = ExpertSettings(num_experts=2, epochs=3, network=NET)
    first = load_or_train_experts(real, 3, settings, CPU, progress=False, cache_dir=tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.pt"))) == 1
    again = load_or_train_experts(real, 3, settings, CPU, progress=False, cache_dir=tmp_path)
    assert len(calls) == 1
    assert all(torch.equal(a, b) for ta, tb in zip(first, again, strict=True) for a, b in zip(ta, tb, strict=True))

    load_or_train_experts(real, 3, ExpertSettings(num_experts=2, epochs=3, lr=0.02, network=NET), CPU, False, tmp_path)
    assert len(calls) == 2
    changed = {c: x.clone() for c, x in real.items()}
    changed[1][0, 0, 0, 0] += 0.5
    load_or_train_experts(changed, 3, settings, CPU, progress=False, cache_dir=tmp_path)
    assert len(calls) == 3 and len(list(tmp_path.glob("*.pt"))) == 3


def test_expert_trajectories_shape():
    """Each trajectory holds epochs + 1 flat CPU vectors that load back into the ConvNet."""
    settings = ExpertSettings(num_experts=2, epochs=3, network=NET)
    trajectories = experts.train_experts(data(20, 0), 3, settings, CPU, progress=False)
    net = ConvNet(1, 3, SIZE, NET)
    assert len(trajectories) == 2 and all(len(t) == 4 for t in trajectories)
    for vector in trajectories[0]:
        assert vector.shape == flat_params(net).shape and vector.device.type == "cpu"
    assert not torch.equal(trajectories[0][0], trajectories[0][-1])  # the expert did train
    assert not torch.equal(trajectories[0][0], trajectories[1][0])  # experts start apart
    params = unflatten_params(net, trajectories[0][-1])
    assert set(params) == {name for name, _ in net.named_parameters()}


def test_forced_divergence_backs_off_and_never_returns_nan(cache_dir, caplog):
    """An absurd lr_img triggers back-offs; the result is finite or a DataError, never NaN."""
    config = _config(iterations=30).model_copy(update={"lr_img": 1e30})  # beyond the schema's bound on purpose
    with caplog.at_level(logging.WARNING, logger="site_agent.distill.mtt"):
        try:
            syn, history = distill_mtt(data(40, 0), config, 3, CPU, progress=False, expert_cache_dir=cache_dir)
        except DataError:
            syn = None
    assert "back-off" in caplog.text
    if syn is not None:
        assert torch.isfinite(syn).all() and syn.shape == (6, 1, SIZE, SIZE)
        assert all(torch.isfinite(torch.tensor(history)))


def test_injected_nan_restores_last_good_set(cache_dir, caplog, monkeypatch):
    """A NaN mid-run (one poisoned augmentation) is caught, rolled back, and the run goes on."""
    calls = []
    original = mtt.dsa

    def poisoned(x, seed, per_sample=False):
        calls.append(1)
        out = original(x, seed, per_sample)
        return out * float("nan") if len(calls) == 12 else out  # inside iteration 3 (5 steps each)

    monkeypatch.setattr(mtt, "dsa", poisoned)
    with caplog.at_level(logging.WARNING, logger="site_agent.distill.mtt"):
        syn, history = distill_mtt(
            data(40, 0), _config(iterations=10), 3, CPU, progress=False, expert_cache_dir=cache_dir
        )
    assert "non-finite loss" in caplog.text and "back-off 1/5" in caplog.text
    assert len(history) == 9  # the poisoned iteration is dropped, the rest are kept
    assert torch.isfinite(syn).all()


def test_unrecoverable_divergence_raises_data_error(cache_dir, monkeypatch):
    """When no iteration gives a finite loss, DataError is raised instead of returning noise."""
    monkeypatch.setattr(mtt, "dsa", lambda x, seed, per_sample=False: x * float("nan"))
    with pytest.raises(DataError):
        distill_mtt(data(40, 0), _config(iterations=20), 3, CPU, progress=False, expert_cache_dir=cache_dir)


def test_zca_round_trip_and_pixel_space_output(tmp_path):
    """ZCA un-whitens exactly, and zca=True releases finite images on the real images' scale."""
    real = data(40, 0)
    zca = mtt._Zca.fit(real)
    x = real[0][:5]
    assert torch.allclose(zca.unwhiten(zca.whiten(x)), x, atol=1e-4)
    config = _config(iterations=3, zca=True, init=InitMode.REAL, lr_img=1e-6)
    syn, history = distill_mtt(real, config, 3, CPU, progress=False, expert_cache_dir=tmp_path)
    assert syn.shape == (6, 1, SIZE, SIZE) and torch.isfinite(syn).all() and len(history) == 3
    # Barely moved from real starts, so un-whitened output must sit on real pixels of its class.
    for k, images in enumerate(real.values()):
        nearest = torch.cdist(syn[k * 2 : (k + 1) * 2].flatten(1), images.flatten(1)).min(dim=1).values
        assert (nearest < 1e-2).all()


def test_config_bounds():
    """Unknown fields and unreachable targets are refused; the config is frozen and round-trips."""
    with pytest.raises(pydantic.ValidationError):
        MTTConfig(lr_net=0.1)
    with pytest.raises(pydantic.ValidationError):
        MTTConfig(train_epochs_expert=5, max_start_epoch=5, expert_epochs=2)
    MTTConfig(train_epochs_expert=6, max_start_epoch=5, expert_epochs=2)
    config = MTTConfig()
    with pytest.raises(pydantic.ValidationError):
        config.ipc = 5  # type: ignore[misc]
    assert MTTConfig.model_validate_json(config.model_dump_json()) == config
