"""Distribution Matching on tiny generated images (3 classes of 16x16, one channel, CPU)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from shared.methods import EmbeddingMatch
from shared.models import ConvNet
from site_agent.distill.dm import DMConfig, distill_dm, gaussian_mmd2
from tests.site_agent.generated import CPU, NET, SIZE, accuracy, data

torch.set_num_threads(1)



def _config(**overrides) -> DMConfig:
    return DMConfig(**{"ipc": 2, "iterations": 60, "batch_real": 32, "network": NET, **overrides})


def test_matching_loss_decreases():
    """The mean-embedding loss falls well below its start on separable classes."""
    _, history = distill_dm(data(40, 0), _config(), 3, CPU, progress=False)
    assert len(history) == 60
    assert sum(history[-5:]) / 5 < 0.25 * sum(history[:5]) / 5


def test_output_shape_dtype_finite_and_class_major():
    """Output is (K*ipc, C, H, W) float32, finite, with block k matching the k-th key's class."""
    order = (2, 0, 1)
    real = data(40, 0, order)
    syn, _ = distill_dm(real, _config(ipc=3), 3, CPU, progress=False)
    assert syn.shape == (9, 1, SIZE, SIZE)
    assert syn.dtype == torch.float32
    assert torch.isfinite(syn).all()
    assert not syn.requires_grad
    class_means = torch.stack([real[c].mean(0).flatten() for c in order])  # in key order
    for k in range(len(order)):
        block_mean = syn[k * 3 : (k + 1) * 3].mean(0).flatten()
        assert torch.cdist(block_mean[None], class_means).argmin().item() == k


def test_synthetic_set_trains_a_classifier():
    """A ConvNet trained only on the synthetic set beats chance (1/3) clearly on held-out data."""
    syn, _ = distill_dm(data(40, 0), _config(), 3, CPU, progress=False)
    labels = torch.arange(3).repeat_interleave(2)
    assert accuracy(syn, labels) > 0.7


def test_same_seed_same_output():
    """Two runs with the same seed give bit-identical images; another seed does not."""
    real = data(40, 0)
    first, h1 = distill_dm(real, _config(iterations=5), 3, CPU, progress=False)
    second, h2 = distill_dm(real, _config(iterations=5), 3, CPU, progress=False)
    other, _ = distill_dm(real, _config(iterations=5, seed=1), 3, CPU, progress=False)
    assert torch.equal(first, second) and h1 == h2
    assert not torch.equal(first, other)


def test_one_forward_per_branch_per_iteration(monkeypatch):
    """Embeddings are batched across classes: two embed calls per iteration (real, synthetic)."""
    calls = []
    original = ConvNet.embed

    def counting_embed(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(ConvNet, "embed", counting_embed)
    distill_dm(data(40, 0), _config(iterations=3), 3, CPU, progress=False)
    assert calls == [3 * 32, 3 * 2] * 3


def test_config_is_strict():
    """Unknown fields are refused and the config is frozen, like DCConfig."""
    with pytest.raises(pydantic.ValidationError):
        DMConfig(lr_net=0.1)
    with pytest.raises(pydantic.ValidationError):
        DMConfig(lr_img=0)
    config = DMConfig()
    with pytest.raises(pydantic.ValidationError):
        config.ipc = 5  # type: ignore[misc]
    assert DMConfig.model_validate_json(config.model_dump_json()) == config


def test_mmd_penalises_a_collapsed_class_that_mean_matching_accepts():
    """Fakes piled on the real mean satisfy DM's loss but not the MMD's, which wants the real spread."""
    torch.manual_seed(0)
    real = torch.randn(128, 64)
    collapsed = real.mean(0) + 0.01 * torch.randn(10, 64)
    spread = torch.randn(10, 64)
    spread = spread - spread.mean(0) + real.mean(0)  # spread like the real ones, with the same mean
    assert ((real.mean(0) - collapsed.mean(0)) ** 2).sum() < 0.01
    assert ((real.mean(0) - spread.mean(0)) ** 2).sum() < 0.01
    assert gaussian_mmd2(real, collapsed) > gaussian_mmd2(real, spread) + 1.0


def test_mmd_matching_keeps_a_class_diverse_and_trains_a_classifier():
    """match mmd: the synthetic images of a class stay further apart than with the mean, and still teach."""
    real = data(40, 0)
    mean_set, _ = distill_dm(real, _config(ipc=4), 3, CPU, progress=False)
    mmd_set, history = distill_dm(real, _config(ipc=4, match=EmbeddingMatch.MMD), 3, CPU, progress=False)
    assert sum(history[-5:]) < sum(history[:5])

    def spread(images: torch.Tensor) -> float:
        return sum(torch.pdist(images[k * 4 : (k + 1) * 4].flatten(1)).mean().item() for k in range(3))

    assert spread(mmd_set) > spread(mean_set)
    assert accuracy(mmd_set, torch.arange(3).repeat_interleave(4)) > 0.7
