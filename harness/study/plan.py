"""What a study runs: its settings (``StudyConfig``) and the list of arms they expand to (``arms``).

Every arm of one seed uses the same partition: the one ``site_agent.data.load_site_images`` gives
simulated site i of N for (scheme, alpha, seed). The runner checks this by the shares' digests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.config import RunConfig
from shared.methods import DistillMethod
from shared.schemas import PartitionScheme

_RUN = RunConfig()  # a pooled arm is `coordinator simulate`: the study starts from the same defaults


def _as_in_run(key: str, default: Any, **bounds: Any) -> Any:
    """A study setting that means what run-config ``key`` means: RunConfig's help text, within its bounds
    (tests/test_config_sources.py checks the bounds and the defaults)."""
    return Field(default, description=RunConfig.description(key), **bounds)


class StudyConfig(BaseModel):
    """Settings of one study on one dataset. Defaults are the full design; a CPU budget narrows them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = _as_in_run("dataset", _RUN.dataset)
    data_root: str = _as_in_run("data_root", _RUN.data_root)
    sites: int = _as_in_run("sites", _RUN.sites, ge=1, le=100)
    partition: PartitionScheme = _as_in_run("partition", _RUN.partition)
    alpha: float = _as_in_run("alpha", _RUN.alpha, gt=0)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # pooled distilled sets: every method x ipc; refinement rounds 1..rounds from one run (round 1 is the 1-round arm)
    methods: list[DistillMethod] = Field(default_factory=lambda: [DistillMethod.DC, DistillMethod.DM,
                                                                  DistillMethod.MTT, DistillMethod.IDM], min_length=1)
    ipcs: list[int] = Field(default_factory=lambda: [1, 10, 50], min_length=1)
    rounds: int = _as_in_run("rounds", 3, ge=1, le=20)
    iterations: int = _as_in_run("iterations", _RUN.iterations, ge=0, le=100_000)
    epsilon: float = _as_in_run("epsilon", _RUN.epsilon, gt=0, le=20)  # dpdm's target, when dpdm is among the methods
    train_epochs: int = _as_in_run("train_epochs", _RUN.train_epochs, ge=1)  # the global model on a pooled set or subset
    # FedAvg on the same sites
    fedavg_local_epochs: int = Field(2, ge=1)
    fedavg_max_rounds: int = Field(50, ge=1)
    fedavg_patience: int = Field(5, ge=1)
    # each site alone, and centralised training on every site's training share (the ceiling)
    local_epochs: int = Field(100, ge=1)
    central_epochs: int = Field(50, ge=1)
    # the same pooled set (and subset) trained into a ResNet-18 as well; 0 skips it
    cross_arch_epochs: int = Field(50, ge=0)
    net_width: int = _as_in_run("net_width", _RUN.net_width, ge=8, le=1024)
    device: str = _as_in_run("device", _RUN.device)
    out_dir: str = Field("results/study", description="Parent folder of the study's folder (study-<dataset>).")

    def run_config(self, seed: int, method: DistillMethod, ipc: int, run_dir: str) -> RunConfig:
        """The ``coordinator simulate`` settings of one pooled arm (dpdm releases once: one round)."""
        rounds = 1 if method == DistillMethod.DPDM else self.rounds
        private: dict[str, Any] = {"epsilon": self.epsilon} if method == DistillMethod.DPDM else {}
        return RunConfig(dataset=self.dataset, data_root=self.data_root, sites=self.sites, min_sites=self.sites,
                         partition=self.partition, alpha=self.alpha, seed=seed, rounds=rounds, method=method, ipc=ipc,
                         iterations=self.iterations, net_width=self.net_width, train_epochs=self.train_epochs,
                         privacy_report=False, device=self.device, out_dir=self.out_dir, run_dir=run_dir, **private)


@dataclass(frozen=True)
class Arm:
    """One run of the study: ``kind`` is pooled, fedavg, local or central (the subset rides on a pooled run)."""

    kind: str
    seed: int
    method: DistillMethod | None = None
    ipc: int | None = None

    @property
    def key(self) -> str:
        """Stable name, also the arm's folder: ``pooled-idm-ipc10-seed0``, ``fedavg-seed0``."""
        parts = [self.kind] + ([self.method.value, f"ipc{self.ipc}"] if self.method else []) + [f"seed{self.seed}"]
        return "-".join(parts)


def arms(config: StudyConfig) -> list[Arm]:
    """Every arm of the study, cheapest kinds first so a partial study already has its references."""
    plan: list[Arm] = []
    for seed in config.seeds:
        plan += [Arm("central", seed), Arm("local", seed), Arm("fedavg", seed)]
        plan += [Arm("pooled", seed, method, ipc) for method in config.methods for ipc in config.ipcs]
    return plan
