"""Federation-wide settings: one typed object, read once from Flower's run config.

Keys are kebab-case in TOML (``images-per-class`` style, as in ``[tool.flwr.app.config]``) and
snake_case in Python; :meth:`RunConfig.from_flower` is the one place that translates.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError
from shared.fields import setting_error
from shared.methods import (
    DCConfig,
    DistillConfig,
    DistillMethod,
    DMConfig,
    DPDMConfig,
    EmbeddingMatch,
    IDMConfig,
    InitMode,
    MTTConfig,
    NetworkSpec,
)
from shared.presets import PRESET_BATCH_REAL, PRESET_ITERATIONS
from shared.schemas import ImbalanceCorrection, PartitionScheme
from shared.training import TrainSettings


class RunConfig(BaseModel):
    """Everything the coordinator decides for one run; sites may still refuse (site policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data and simulation
    dataset: str = "breastmnist"
    data_root: str = ""  # empty: MEDMNIST_ROOT, then ~/.medmnist
    sites: int = Field(3, ge=1, le=1000)
    min_sites: int = Field(2, ge=1, le=1000)
    partition: PartitionScheme = PartitionScheme.DIRICHLET
    alpha: float = Field(0.5, gt=0)
    seed: int = Field(0, ge=0)
    # Refinement rounds (FedDM-style): from round 2 each site refines its own set against the global model.
    rounds: int = Field(1, ge=1, le=100)
    # distillation request
    method: DistillMethod = DistillMethod.IDM  # the measured best within a CPU site's budget (docs/benchmarks.md)
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(0, ge=0, le=100_000)  # 0: the method's CPU preset (shared/presets.py)
    lr_img: float = Field(0.0, ge=0)  # 0: the method's own default (DC 0.1, DM 1.0, MTT 10, DPDM 10)
    lr_net: float = Field(0.01, gt=0)
    batch_real: int = Field(0, ge=0)  # 0: the method's CPU preset
    outer_loop: int = Field(0, ge=0)
    inner_loop: int = Field(10, ge=0)
    dsa: bool = True
    init: InitMode = InitMode.NOISE
    # dm and idm: match each class's mean embedding, or its whole distribution (MMD, M3D-style)
    match: EmbeddingMatch = EmbeddingMatch.MEAN
    net_width: int = Field(64, ge=8, le=1024)
    net_depth: int = Field(3, ge=1, le=6)
    # dpdm's differential-privacy target for each site's one release (site_agent/distill/dpdm.py)
    epsilon: float = Field(4.0, gt=0, le=20)
    delta: float = Field(1e-5, gt=0, le=1e-3)
    # global model
    train_epochs: int = Field(300, ge=1)
    train_lr: float = Field(0.01, gt=0)
    train_batch: int = Field(256, ge=1)
    train_dsa: bool = True
    # How the global model is corrected for the real class mix the sites release (coordinator/imbalance.py). None by
    # default: a correction for accuracy trades minority classes away (docs/benchmarks.md, "The default correction":
    # balanced accuracy fell on every dev set, 3 seeds each; a 7-class dermatoscopy federation lost melanoma).
    imbalance: ImbalanceCorrection = ImbalanceCorrection.NONE
    # Simulated sites' privacy report before each release (site_agent/privacy): shown, never blocking.
    privacy_report: bool = True
    privacy_shadows: int = Field(0, ge=0, le=64)  # LiRA shadow models per site (each is a distillation)
    # Simulated sites hold every release for manual approval (site policy require_approval), to try the review.
    require_approval: bool = False
    # operations
    node_wait_timeout: float = Field(120.0, gt=0)
    distill_timeout: float = Field(3600.0, gt=0)
    # Ask a site whose release awaits its operator's approval again (same request, same nonce) every
    # approval-ask-every-s, for up to approval-wait-s after the first ask (0: ask once, do not wait).
    approval_wait_s: float = Field(0.0, ge=0)
    approval_ask_every_s: float = Field(30.0, gt=0)
    evaluate_timeout: float = Field(600.0, gt=0)
    max_bundle_mb: float = Field(64.0, gt=0)
    out_dir: str = "results"
    run_dir: str = ""  # empty: <out-dir>/run-<flower run id>
    keys_dir: str = ""  # empty: simulation keys generated into <run-dir>/keys
    resume: bool = False  # continue the stopped run in run-dir, reusing the bundles it already holds
    device: str = "auto"

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse Flower's run config (kebab-case keys); missing keys take the defaults above.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or range.
        """
        values = {key.replace("-", "_"): value for key, value in run_config.items()}
        unknown = sorted(key for key in values if key not in cls.model_fields)
        if unknown:
            nearest = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
            raise ConfigError(
                f"unknown run config key {unknown[0].replace('_', '-')!r}"
                + (f"; did you mean {nearest[0].replace('_', '-')!r}?" if nearest else ""),
                hint="`coordinator run --help` lists every key",
            )
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise setting_error(exc, "run config '{key}': {msg}") from exc
        if config.min_sites > config.sites:
            raise ConfigError(f"run config 'min-sites' is {config.min_sites}, more than 'sites' ({config.sites})")
        config.check_private_rounds()
        if config.match != EmbeddingMatch.MEAN and config.method not in (DistillMethod.DM, DistillMethod.IDM):
            raise ConfigError(f"run config 'match' is {config.match.value}: only dm and idm match embeddings")
        return config

    def check_private_rounds(self) -> None:
        """Refuse refinement rounds with dpdm: each would touch the sites' images again, outside epsilon.

        Raises:
            ConfigError: ``rounds`` > 1 with method dpdm.
        """
        if self.method == DistillMethod.DPDM and self.rounds > 1:
            raise ConfigError(f"run config 'rounds' is {self.rounds}: dpdm releases once per site (a refinement "
                              "round would spend privacy budget the guarantee does not count)")

    def to_flower(self) -> dict[str, Any]:
        """Kebab-case keys with plain values, as Flower's run config carries them."""
        return {key.replace("_", "-"): value for key, value in self.model_dump(mode="json").items()}

    def distill_config(self) -> DistillConfig:
        """The per-method settings sent to every site."""
        common = {"ipc": self.ipc, "iterations": self.iterations or PRESET_ITERATIONS[self.method],
                  "dsa": self.dsa, "init": self.init, "seed": self.seed, "network": self.network()}
        if self.lr_img:
            common["lr_img"] = self.lr_img
        if self.method == DistillMethod.DM:
            return DMConfig(batch_real=self.batch_real or PRESET_BATCH_REAL[self.method], match=self.match, **common)
        if self.method == DistillMethod.IDM:
            return IDMConfig(batch_real=self.batch_real or PRESET_BATCH_REAL[self.method], lr_net=self.lr_net,
                             match=self.match, **common)
        if self.method == DistillMethod.MTT:
            return MTTConfig(**common)
        if self.method == DistillMethod.DPDM:
            return DPDMConfig(epsilon=self.epsilon, delta=self.delta, **common)
        batch_real = self.batch_real or PRESET_BATCH_REAL[self.method]
        return DCConfig(lr_net=self.lr_net, batch_real=batch_real, outer_loop=self.outer_loop,
                        inner_loop=self.inner_loop, **common)

    def network(self) -> NetworkSpec:
        return NetworkSpec(depth=self.net_depth, width=self.net_width)

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.train_epochs, lr=self.train_lr, batch_size=self.train_batch, augment=self.train_dsa, seed=self.seed
        )

    def resolved_run_dir(self, flower_run_id: int) -> Path:
        """Where this run writes results (and, in simulation, its keys): an absolute path."""
        if self.run_dir:
            return Path(self.run_dir).expanduser().resolve()
        return Path(self.out_dir).expanduser().resolve() / f"run-{flower_run_id}"


def simulated_site_id(partition_id: int) -> str:
    """The site id a simulated site with this Flower partition id signs as."""
    return f"site-{partition_id}"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise any name torch accepts.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r} is not a torch device name (try 'auto', 'cpu' or 'cuda')") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device")
    return device
