"""Federation-wide settings: one typed object, read once from Flower's run config, in sections.

Each key is marked with its section (``Section``): what a site computes (``SiteRunConfig``, the only part a
site parses), how a simulation plays the sites, and how the coordinator runs the federation; and with its
help text, which the command lines show. Keys are kebab-case in TOML (``train-epochs``, as in
``[tool.flwr.app.config]`` and ``--set``) and snake_case in Python; ``_snake_case`` is the one place that
translates.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError
from shared.fields import did_you_mean, setting_error
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
    SoftLabelSpec,
)
from shared.presets import PRESET_BATCH_REAL, PRESET_ITERATIONS, PRESET_LR_IMG
from shared.schemas import ImbalanceCorrection, PartitionScheme
from shared.training import TrainSettings


class Section(StrEnum):
    """Who reads a run-config key: every key is marked with one (``RunConfig.section_of``)."""

    SITE = "site"  # shapes what each site computes; it reaches the site inside its requests (SiteRunConfig)
    SIMULATION = "simulation"  # how one machine splits the data and plays the sites (`coordinator simulate`)
    COORDINATOR = "coordinator"  # how the coordinator runs the federation; a site never needs it


def _setting(default: Any, section: Section, description: str, **bounds: Any) -> Any:
    """A run-config field: its default, who reads it, its ``--help`` text and its bounds."""
    return Field(default, description=description, json_schema_extra={"section": section.value}, **bounds)


_SITE, _SIMULATION, _COORDINATOR = Section.SITE, Section.SIMULATION, Section.COORDINATOR


class SiteRunConfig(BaseModel):
    """The site section of the run config: what each site is asked to compute, and nothing of the coordinator's.

    A site parses only this part of Flower's run config (:meth:`from_flower` ignores the coordinator's own
    keys), so a coordinator's timeouts, paths or a key added later never stop a site from answering.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    dataset: str = _setting("breastmnist", _SITE, "MedMNIST 2D dataset flag, e.g. breastmnist, retinamnist, pathmnist.")
    seed: int = _setting(0, _SITE, "Seed for partitioning, distillation and training.", ge=0)
    # distillation request
    method: DistillMethod = _setting(  # the measured best within a CPU site's budget (docs/benchmarks.md)
        DistillMethod.IDM, _SITE, "Distillation method run at every site.")
    ipc: int = _setting(10, _SITE, "Synthetic images per class per site.", ge=1, le=1000)
    iterations: int = _setting(0, _SITE, "Distillation iterations (0: the method's CPU preset).", ge=0, le=100_000)
    lr_img: float = _setting(0.0, _SITE, "Learning rate of the synthetic images (0: the method's CPU preset: DC 0.1, "
                             "DM 1.0, IDM 5, MTT 10, DPDM 10).", ge=0)
    lr_net: float = _setting(0.01, _SITE, "Learning rate of the network inside DC's and IDM's distillation.", gt=0)
    batch_real: int = _setting(0, _SITE, "Real images per class per matching step (0: the method's CPU preset).", ge=0)
    outer_loop: int = _setting(0, _SITE, "DC outer loop (0: the paper's value for the ipc).", ge=0)
    inner_loop: int = _setting(10, _SITE, "DC inner loop (0: the paper's value for the ipc).", ge=0)
    dsa: bool = _setting(True, _SITE, "Differentiable Siamese augmentation while distilling.")
    init: InitMode = _setting(InitMode.NOISE, _SITE, "Synthetic init: 'noise'; 'means', averages of k-means clusters "
                              "of at least 10 of a class's images (dm, idm, dc, mtt); 'real' copies patient images "
                              "into the release: demos only.")
    match: EmbeddingMatch = _setting(EmbeddingMatch.MEAN, _SITE, "dm and idm: match each class's mean embedding, or "
                                     "its whole distribution (mmd, M3D-style).")
    net_width: int = _setting(64, _SITE, "ConvNet width (the paper uses 128).", ge=8, le=1024)
    net_depth: int = _setting(3, _SITE, "ConvNet depth: convolution blocks.", ge=1, le=6)
    # soft labels: each site's teacher labels its set (shared.methods.SoftLabelSpec)
    # Off by default: measured, they lift a federation of large sites (blood cells: +0.075 balanced accuracy) and
    # lower small ones (BreastMNIST, long-tailed RetinaMNIST; docs/benchmarks.md, "Soft labels").
    soft_labels: bool = _setting(False, _SITE, "Sites label their synthetic images with the class probabilities of a "
                                 "network they train on their own images (not dpdm, whose guarantee does not cover it).")
    teacher_epochs: int = _setting(30, _SITE, "Epochs of each site's soft-label teacher.", ge=1, le=1000)
    label_temperature: float = _setting(1.0, _SITE, "Softmax temperature of the soft labels (above 1: softer).", gt=0,
                                        le=100)
    # dpdm's differential-privacy target for each site's one release (site_agent/distill/dpdm.py)
    epsilon: float = _setting(4.0, _SITE, "dpdm: each site's differential-privacy epsilon for its one release.",
                              gt=0, le=20)
    delta: float = _setting(1e-5, _SITE, "dpdm: each site's differential-privacy delta.", gt=0, le=1e-3)
    # the global model: trained by the coordinator, and alike by each site that scores it (shared.schemas.TrainingSpec)
    train_epochs: int = _setting(300, _SITE, "Epochs to train the global model on the pooled set.", ge=1)
    train_lr: float = _setting(0.01, _SITE, "Learning rate of the global model.", gt=0)
    train_batch: int = _setting(256, _SITE, "Batch size of the global model's training.", ge=1)
    train_dsa: bool = _setting(True, _SITE, "Differentiable Siamese augmentation while training the global model.")
    train_balance: bool = _setting(True, _SITE, "Weight each class's loss by the inverse of its share of the pool, so "
                                   "a class the sites distilled fewer images of counts as much as the others.")

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> SiteRunConfig:
        """The site section of Flower's run config (kebab-case keys); the coordinator's keys are ignored.

        Raises:
            ConfigError: a site key's value of the wrong type or range.
        """
        values = {key: value for key, value in _snake_case(run_config).items() if key in cls.model_fields}
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise setting_error(exc, "run config '{key}': {msg}") from exc
        config.check_match()
        return config

    def check_match(self) -> None:
        """Refuse an embedding match other than the mean for a method that matches no embeddings.

        Raises:
            ConfigError: ``match`` is not mean and ``method`` is neither dm nor idm.
        """
        if self.match != EmbeddingMatch.MEAN and self.method not in (DistillMethod.DM, DistillMethod.IDM):
            raise ConfigError(f"run config 'match' is {self.match.value}: only dm and idm match embeddings")

    def distill_config(self) -> DistillConfig:
        """The per-method settings sent to every site."""
        common = {"ipc": self.ipc, "iterations": self.iterations or PRESET_ITERATIONS[self.method],
                  "dsa": self.dsa, "init": self.init, "seed": self.seed, "network": self.network()}
        lr_img = self.lr_img or PRESET_LR_IMG.get(self.method)
        if lr_img:
            common["lr_img"] = lr_img
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

    def soft_label_spec(self) -> SoftLabelSpec | None:
        """What the sites are asked to label their sets with: None when off, and for dpdm, which releases classes only."""
        if not self.soft_labels or self.method == DistillMethod.DPDM:
            return None
        return SoftLabelSpec(teacher_epochs=self.teacher_epochs, temperature=self.label_temperature)

    def network(self) -> NetworkSpec:
        return NetworkSpec(depth=self.net_depth, width=self.net_width)

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.train_epochs, lr=self.train_lr, batch_size=self.train_batch, augment=self.train_dsa,
            seed=self.seed, balance_classes=self.train_balance,
        )


class RunConfig(SiteRunConfig):
    """Everything the coordinator decides for one run; sites may still refuse (site policy).

    The site section (inherited) plus the simulation's and the coordinator's own settings. Every field says
    its section and its ``--help`` text; the CLI options, pyproject's ``[tool.flwr.app.config]`` and the
    study's settings are checked against them (tests/test_config_sources.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data and simulation
    data_root: str = _setting("", _SIMULATION, "MedMNIST folder, or a hospital's own .npz export or image folder, "
                              "to share out across the sites (empty: $MEDMNIST_ROOT, then ~/.medmnist).")
    partition: PartitionScheme = _setting(PartitionScheme.DIRICHLET, _SIMULATION,
                                          "How the dataset is split across sites.")
    alpha: float = _setting(0.5, _SIMULATION, "Dirichlet concentration: smaller = more different label mixes.", gt=0)
    privacy_report: bool = _setting(True, _SIMULATION, "Simulated sites measure their privacy report before each "
                                    "release (shown, never blocking).")
    privacy_shadows: int = _setting(0, _SIMULATION, "LiRA shadow models per simulated site (each is a distillation).",
                                    ge=0, le=64)
    require_approval: bool = _setting(False, _SIMULATION, "Simulated sites hold every release for manual approval "
                                      "(site policy require_approval), to try the review.")
    # the federation
    sites: int = _setting(3, _COORDINATOR, "Sites expected (a simulation runs this many, one Flower SuperNode each).",
                          ge=1, le=1000)
    min_sites: int = _setting(2, _COORDINATOR, "Fewest valid bundles for the run to go on.", ge=1, le=1000)
    rounds: int = _setting(1, _COORDINATOR, "Rounds: from round 2 each site refines its set against the global model.",
                           ge=1, le=100)
    # None by default: a correction for accuracy trades minority classes away (docs/benchmarks.md, "The default
    # correction": balanced accuracy fell on every dev set, 3 seeds each; a 7-class dermatoscopy federation lost melanoma).
    imbalance: ImbalanceCorrection = _setting(ImbalanceCorrection.NONE, _COORDINATOR, "Correct the global model for "
                                              "the class mix the sites release (coordinator/imbalance.py).")
    # operations
    node_wait_timeout: float = _setting(120.0, _COORDINATOR, "Seconds to wait for sites to connect.", gt=0)
    distill_timeout: float = _setting(3600.0, _COORDINATOR, "Seconds to wait for bundles.", gt=0)
    approval_wait_s: float = _setting(0.0, _COORDINATOR, "Seconds to keep asking a site whose release awaits its "
                                      "operator's approval, the same request each time (0: ask once, do not wait).",
                                      ge=0)
    approval_ask_every_s: float = _setting(30.0, _COORDINATOR, "Seconds between asks while a release awaits "
                                           "approval.", gt=0)
    evaluate_timeout: float = _setting(600.0, _COORDINATOR, "Seconds to wait for the sites' tuning or evaluation "
                                       "counts.", gt=0)
    max_bundle_mb: float = _setting(64.0, _COORDINATOR, "Largest sealed bundle accepted, in MB.", gt=0)
    out_dir: str = _setting("results", _COORDINATOR, "Parent folder of the run's results folder.")
    run_dir: str = _setting("", _COORDINATOR, "The run's results folder (empty: a new one under out-dir).")
    keys_dir: str = _setting("", _COORDINATOR, "The coordinator's key directory (a simulation without one generates "
                             "its keys into the results folder).")
    resume: bool = _setting(False, _COORDINATOR, "Continue the stopped run in run-dir, reusing the bundles it "
                            "already holds.")
    device: str = _setting("auto", _COORDINATOR, "Where the global model is trained (and simulated sites compute): "
                           "auto (CUDA when present), cpu, cuda, cuda:1, ...")

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any], help_command: str = "coordinator run") -> RunConfig:
        """Parse Flower's run config (kebab-case keys); missing keys take the defaults above.

        ``help_command`` is the command whose ``--help`` lists the keys, named in an unknown key's hint.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or range.
        """
        values = _snake_case(run_config)
        unknown = sorted(key for key in values if key not in cls.model_fields)
        if unknown:
            key = unknown[0].replace("_", "-")
            raise ConfigError(
                f"unknown run config key {key!r}" + did_you_mean(key, [k.replace("_", "-") for k in cls.model_fields]),
                hint=f"`{help_command} --help` lists every key",
            )
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise setting_error(exc, "run config '{key}': {msg}") from exc
        if config.min_sites > config.sites:
            raise ConfigError(f"run config 'min-sites' is {config.min_sites}, more than 'sites' ({config.sites})")
        config.check_private_rounds()
        config.check_match()
        return config

    @classmethod
    def section_of(cls, key: str) -> Section:
        """The section of a key (kebab or snake case)."""
        extra = cls.model_fields[key.replace("-", "_")].json_schema_extra
        assert isinstance(extra, dict), f"run-config field {key} has no section"
        return Section(extra["section"])

    @classmethod
    def description(cls, key: str) -> str:
        """A key's help text (kebab or snake case)."""
        return cls.model_fields[key.replace("-", "_")].description or ""

    @classmethod
    def keys_in(cls, section: Section) -> list[str]:
        """The keys of one section, kebab case, in the order the fields are declared."""
        return [name.replace("_", "-") for name in cls.model_fields if cls.section_of(name) == section]

    def site_part(self) -> SiteRunConfig:
        """What a site reads of this run's settings."""
        return SiteRunConfig.model_validate(self.model_dump(include=set(SiteRunConfig.model_fields)))

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

    def resolved_run_dir(self, flower_run_id: int) -> Path:
        """Where this run writes results (and, in simulation, its keys): an absolute path."""
        if self.run_dir:
            return Path(self.run_dir).expanduser().resolve()
        return Path(self.out_dir).expanduser().resolve() / f"run-{flower_run_id}"


def _snake_case(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Flower's kebab-case keys as field names; the one place that translates."""
    return {key.replace("-", "_"): value for key, value in run_config.items()}


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
