"""Differentially private distillation (dpdm): its accounting, its noise, the set and the signed guarantee."""

from __future__ import annotations

import math
from pathlib import Path

import dp_accounting
import numpy as np
import pydantic
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from coordinator.receive import Expectation, receive_bundle
from shared.config import RunConfig
from shared.errors import ConfigError, PolicyError
from shared.methods import DMConfig, DPDMConfig, InitMode, NetworkSpec
from shared.schemas import DistillRequest, ModelSpec
from site_agent.distill import distill
from site_agent.distill import dpdm as dpdm_module
from site_agent.distill.accounting import epsilon_for, noise_multiplier_for
from site_agent.distill.dpdm import SENSITIVITY, FeatureMap, distill_dpdm, noisy_class_statistics
from site_agent.handlers import prepare_release
from site_agent.policy import PrivacyLimits, SitePolicy
from site_agent.settings import SiteSettings
from tests.conftest import blobs
from tests.site_agent.generated import CPU, NET, SIZE, data

DELTA = 1e-5


def _config(**overrides) -> DPDMConfig:
    return DPDMConfig(**{"ipc": 2, "iterations": 20, "network": NET, "epsilon": 10.0, **overrides})


@pytest.mark.parametrize(("epsilon", "multiplier"), [(1.0, 3.73), (4.0, 1.08), (10.0, 0.50)])
def test_calibrated_noise_meets_the_target_and_no_more(epsilon: float, multiplier: float) -> None:
    """The noise multiplier for (epsilon, 1e-5) spends at most epsilon, within 1 % of it, by a fresh PLD accountant."""
    z = noise_multiplier_for(epsilon, DELTA)
    assert z == pytest.approx(multiplier, rel=0.01)
    assert 0.99 * epsilon <= epsilon_for(z, DELTA) <= epsilon
    independent = PLDAccountant().compose(dp_accounting.GaussianDpEvent(z)).get_epsilon(DELTA)  # finer grid
    assert independent <= epsilon * 1.001


def test_larger_epsilon_needs_less_noise() -> None:
    """Noise falls as the budget grows; a smaller delta costs more noise."""
    noises = [noise_multiplier_for(e, DELTA) for e in (0.5, 1.0, 4.0, 10.0)]
    assert noises == sorted(noises, reverse=True)
    assert noise_multiplier_for(1.0, 1e-7) > noise_multiplier_for(1.0, DELTA)


def test_composed_and_sampled_calibration_matches_independent_accountants() -> None:
    """10 Poisson-sampled steps at rate 0.1: the PLD calibration holds against a separately composed PLD and RDP."""
    epsilon, steps, rate = 2.0, 10, 0.1
    z = noise_multiplier_for(epsilon, DELTA, steps=steps, sampling_rate=rate)
    assert epsilon_for(z, DELTA, steps, rate) <= epsilon
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z))
    pld = PLDAccountant().compose(event, count=steps).get_epsilon(DELTA)
    assert pld == pytest.approx(epsilon, rel=0.02)
    rdp = RdpAccountant().compose(event, count=steps).get_epsilon(DELTA)
    assert epsilon * 0.98 <= rdp <= epsilon * 1.5  # RDP is looser than PLD, never tighter
    assert z < noise_multiplier_for(epsilon, DELTA)  # sampling amplifies privacy


def test_released_noise_has_the_calibrated_standard_deviation() -> None:
    """Many releases on fixed data: the sums' and the weighted counts' noise both have std sigma."""
    sigma = noise_multiplier_for(4.0, DELTA) * SENSITIVITY
    features = [torch.nn.functional.normalize(torch.randn(n, 16), dim=1) for n in (30, 50)]
    noise = torch.Generator().manual_seed(0)
    releases = [noisy_class_statistics(features, sigma, noise) for _ in range(1000)]
    sums = torch.stack([r.sums for r in releases])  # (1000, 2, 16)
    counts = torch.stack([r.counts for r in releases])  # (1000, 2)
    true_sums = torch.stack([f.double().sum(0) for f in features])
    assert float((sums - true_sums).std()) == pytest.approx(sigma, rel=0.03)
    assert float((sums - true_sums).mean()) == pytest.approx(0.0, abs=0.05)
    assert float((counts * 0.5 - torch.tensor([15.0, 25.0])).std()) == pytest.approx(sigma, rel=0.05)
    assert sigma == pytest.approx(1.0812 * math.sqrt(1.25), rel=0.01)


def test_features_are_clipped_to_unit_norm_and_per_image() -> None:
    """Every image's feature has L2 norm 1 and does not depend on the rest of its batch."""
    images = data(10, 0)[0]
    features = FeatureMap(1, 3, SIZE, _config(), CPU)
    out = features.without_grad(images)
    assert out.shape == (10, 8 * 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(10), atol=1e-5)
    assert torch.allclose(features.without_grad(images[:3]), out[:3], atol=1e-5)


def test_distills_end_to_end_and_carries_its_dp_record() -> None:
    """Through distill(): ipc images per class, labels from the noisy class choice, the record of what was spent."""
    train = blobs(num_classes=2, per_class=40, size=SIZE)
    result = distill(train, 2, _config(ipc=3), CPU, progress=False, min_real_per_class=5)
    assert result.images.shape == (6, 1, SIZE, SIZE) and result.images.isfinite().all()
    assert result.labels.tolist() == [0, 0, 0, 1, 1, 1] and result.classes == [0, 1]
    dp = result.dp
    assert dp is not None and (dp.epsilon, dp.delta) == (10.0, DELTA)
    assert dp.mechanism == "gaussian" and dp.accountant == "dp-accounting PLD"
    assert dp.sigma == pytest.approx(dp.noise_multiplier * math.sqrt(1.25))
    assert set(dp.noisy_class_counts) == {0, 1}
    assert all(abs(n - 40) < 8 * 2 * dp.sigma for n in dp.noisy_class_counts.values())
    assert len(result.loss_history) == 20


def test_matching_fits_the_noisy_targets() -> None:
    """The loss against the noisy class means falls as the synthetic images are fitted."""
    _, history, _ = distill_dpdm(data(40, 0), _config(iterations=40), 3, CPU, progress=False)
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5


def test_same_seed_gives_fresh_noise() -> None:
    """Two runs with the same seed share networks and views but not the noise, so their sets differ."""
    real = data(30, 0)
    first, _, _ = distill_dpdm(real, _config(iterations=3), 3, CPU, progress=False)
    second, _, _ = distill_dpdm(real, _config(iterations=3), 3, CPU, progress=False)
    assert not torch.equal(first, second)


def test_real_or_mean_init_and_refinement_are_refused() -> None:
    """Starting from real images or their means, or refining in round 2, would use the data outside the budget."""
    for init in (InitMode.REAL, InitMode.MEANS):
        with pytest.raises(pydantic.ValidationError, match=f"noise only: init '{init.value}'"):
            DPDMConfig(init=init)
    with pytest.raises(pydantic.ValidationError, match="dpdm releases once"):
        DistillRequest(run_id="r", nonce="ab" * 32, dataset="breastmnist", distill=_config(), round=2,
                       global_model=ModelSpec(in_channels=1, num_classes=2, image_size=28))
    with pytest.raises(ConfigError, match="rounds"):
        RunConfig.from_flower({"method": "dpdm", "rounds": 2})
    previous = (torch.zeros(2, 1, SIZE, SIZE), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="releases once"):
        distill_dpdm(data(10, 0), _config(), 3, CPU, progress=False, start_from=previous)


def test_run_config_asks_for_the_epsilon_it_names() -> None:
    """The run config's epsilon and delta reach the request; dpdm's preset is 300 iterations."""
    config = RunConfig.from_flower({"method": "dpdm", "epsilon": 1.0, "delta": 1e-6}).distill_config()
    assert isinstance(config, DPDMConfig)
    assert (config.epsilon, config.delta, config.iterations) == (1.0, 1e-6, 300)


def test_policy_can_require_dp_and_cap_epsilon() -> None:
    """require_dp refuses a non-private method; max_epsilon refuses a larger epsilon, naming the limit."""
    def request(config) -> DistillRequest:
        return DistillRequest(run_id="r", nonce="ab" * 32, dataset="breastmnist", distill=config)

    policy = SitePolicy(require_dp=True, max_epsilon=4.0)
    with pytest.raises(PolicyError, match="require_dp"):
        policy.check(request(DMConfig(ipc=2, iterations=2)))
    with pytest.raises(PolicyError, match="epsilon 10 exceeds this site's limit of 4"):
        policy.check(request(_config(epsilon=10.0)))
    policy.check(request(_config(epsilon=4.0)))
    SitePolicy().check(request(DMConfig(ipc=2, iterations=2)))


def test_release_signs_the_guarantee_and_only_noisy_counts(keys, tmp_path: Path, monkeypatch) -> None:
    """The sealed manifest carries (epsilon, delta, mechanism, accountant) and the mechanism's noisy counts;
    the privacy report, measured on the training images outside the budget, stays at the site."""
    coordinator, _ = keys
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 50])
    images = np.clip(rng.integers(40, 215, (2, 28, 28))[labels] + rng.normal(0, 20, (80, 28, 28)), 0, 255)
    np.savez(tmp_path / "export.npz", train_images=images.astype(np.uint8), train_labels=labels)
    # A fixed noise stream for a reproducible test; a site's comes from the OS.
    monkeypatch.setattr(dpdm_module, "os_seeded_generator", lambda: torch.Generator().manual_seed(3))
    limits = PrivacyLimits(max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None, min_nearest_real_quantile=None,
                           shadow_models=0, train_epochs=2)
    policy = SitePolicy(min_real_per_class=5, privacy=limits)
    settings = SiteSettings(site_id="site-0", key_dir=tmp_path / "keys" / "site-0", data_root=str(tmp_path / "export.npz"),
                            policy=policy, device="cpu", verify_md5=True, cache_dir=tmp_path / "cache")
    config = DPDMConfig(ipc=2, iterations=3, epsilon=1.0, network=NetworkSpec(depth=2, width=16))
    request = DistillRequest(run_id="r1", nonce="ef" * 32, dataset="breastmnist", distill=config)
    release, metrics = prepare_release(request, settings, progress=False)
    manifest, dp = release.manifest, release.synthetic.dp
    assert manifest.dp is not None and dp is not None
    assert (manifest.dp.epsilon, manifest.dp.delta) == (1.0, DELTA)
    assert manifest.dp.mechanism == "gaussian" and manifest.dp.accountant == "dp-accounting PLD"
    assert manifest.dp.sensitivity == pytest.approx(math.sqrt(1.25))
    assert manifest.dp.noise_multiplier == pytest.approx(noise_multiplier_for(1.0, DELTA))
    assert manifest.real_class_counts == dp.noisy_class_counts != {0: 30, 1: 50}
    assert manifest.num_real_examples == sum(dp.noisy_class_counts.values()) == metrics["num-examples"]
    assert manifest.privacy is None and list((tmp_path / "cache" / "privacy-reports").rglob("privacy-report.json"))
    opened = receive_bundle(release.sealed, Expectation(request, (1, 28, 28), 2, 1 << 20), coordinator, set())
    assert opened.manifest.dp == manifest.dp
