"""What a distillation request asks a site to run: the method and its settings (the site's policy caps them)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from shared.fields import StrictModel


class DistillMethod(StrEnum):
    """Dataset distillation methods a site can run."""

    DC = "dc"
    DM = "dm"
    MTT = "mtt"
    IDM = "idm"
    DPDM = "dpdm"  # differentially private distribution matching: a formal (epsilon, delta) guarantee


class InitMode(StrEnum):
    """How synthetic images start.

    ``MEANS``: each image of a class starts as the pixel mean of a cluster of that class's real images (k-means),
    every cluster at least ``MEAN_INIT_GROUP`` images; a class with fewer starts from noise. ``NOISE``: standard
    normal pixels. ``REAL`` copies patient images into the release: opt-in only.
    """

    MEANS = "means"
    NOISE = "noise"
    REAL = "real"


# The fewest real images one starting image averages under ``InitMode.MEANS``: an average of ten patients' images
# is an aggregate of the class, not any one of them, and the near-copy check and privacy report still judge the
# release it grows into.
MEAN_INIT_GROUP = 10


class EmbeddingMatch(StrEnum):
    """What DM and IDM match between real and synthetic embeddings of a class."""

    MEAN = "mean"  # the mean embedding (DM's and IDM's loss)
    MMD = "mmd"  # the whole distribution: squared MMD under a Gaussian kernel (M3D, Zhang et al., AAAI 2024)


class NetworkSpec(StrictModel):
    """The ConvNet used for matching and for the global model (Zhao et al. 2021 defaults)."""

    depth: int = Field(3, ge=1, le=6)
    width: int = Field(128, ge=8, le=1024)


class DCConfig(StrictModel):
    """Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

    ``outer_loop``/``inner_loop`` left at 0 take the paper's values for the given IPC.
    """

    method: Literal[DistillMethod.DC] = DistillMethod.DC
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(100, ge=1, le=100_000)
    lr_img: float = Field(0.1, gt=0, le=100)
    lr_net: float = Field(0.01, gt=0, le=10)
    batch_real: int = Field(256, ge=1, le=100_000)
    outer_loop: int = Field(0, ge=0, le=1000)
    inner_loop: int = Field(0, ge=0, le=1000)
    dsa: bool = True
    init: InitMode = InitMode.NOISE
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class DMConfig(StrictModel):
    """Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

    Defaults are the paper's except ``iterations`` and ``init``, lowered / changed for a CPU site.
    """


    method: Literal[DistillMethod.DM] = DistillMethod.DM
    ipc: int = Field(10, ge=1, le=1000)
    # The paper runs 20,000; DM converges slowly, so fewer iterations mean a blurrier set.
    iterations: int = Field(1000, ge=1, le=100_000)
    lr_img: float = Field(1.0, gt=0, le=100)  # paper: 1.0 (SGD, momentum 0.5)
    batch_real: int = Field(256, ge=1, le=100_000)  # paper: 256 real images per class per iteration
    dsa: bool = True
    # The paper starts from real images; noise keeps patients' images out of the release but needs
    # more iterations to reach the same quality.
    init: InitMode = InitMode.NOISE
    match: EmbeddingMatch = EmbeddingMatch.MEAN  # mmd measured below mean on RetinaMNIST (docs/benchmarks.md)
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class MTTConfig(StrictModel):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022), scaled down for a CPU site.

    Paper values quoted are its CIFAR-10 settings at 10 images per class.
    """


    method: Literal[DistillMethod.MTT] = DistillMethod.MTT
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(500, ge=1, le=100_000)  # paper: 5000; fewer = less refined images
    # Paper: 1e3 and 1e-5 (ZCA-whitened CIFAR, real init). On MedMNIST from noise those diverged in
    # most iterations (the learnable lr turned negative); 10 and 1e-7 were stable (docs/benchmarks.md).
    lr_img: float = Field(10.0, gt=0, le=1e6)
    lr_lr: float = Field(1e-7, gt=0, le=1.0)
    lr_teacher: float = Field(0.01, gt=0, le=10)  # paper: 0.01; experts' lr and the student's initial lr
    num_experts: int = Field(5, ge=1, le=1000)  # paper: 100; fewer = less diverse targets, may overfit one run
    train_epochs_expert: int = Field(15, ge=2, le=1000)  # paper: 50; limits how late a start can be
    max_start_epoch: int = Field(10, ge=1, le=1000)  # paper: 20 (2 at 1 IPC); start epoch drawn in [0, this)
    expert_epochs: int = Field(2, ge=1, le=100)  # paper: 2; target = start + this
    # Paper: 30; each unrolled step keeps its activations for the backward pass (memory and time).
    syn_steps: int = Field(20, ge=1, le=1000)
    batch_syn: int = Field(0, ge=0, le=100_000)  # 0 = the whole synthetic set per step, as the paper
    zca: bool = False  # paper: True on CIFAR; see the module docstring for how it is released
    dsa: bool = True
    init: InitMode = InitMode.NOISE  # paper: real images; noise keeps patients' images out of the release
    seed: int = Field(0, ge=0)  # also seeds the experts, so changing it retrains them
    network: NetworkSpec = NetworkSpec()

    @model_validator(mode="after")
    def _targets_exist(self) -> MTTConfig:
        if self.max_start_epoch - 1 + self.expert_epochs > self.train_epochs_expert:
            raise ValueError(
                f"max_start_epoch - 1 + expert_epochs ({self.max_start_epoch - 1 + self.expert_epochs}) "
                f"exceeds train_epochs_expert ({self.train_epochs_expert})"
            )
        return self


class IDMConfig(StrictModel):
    """Improved Distribution Matching (Zhao, Li, Qin & Yu, CVPR 2023), scaled down for a CPU site.

    DM's mean-embedding matching, but the embeddings come from a queue of partly trained networks (a
    fresh one joins every ``new_model_every`` iterations, the oldest leaves; each iteration trains
    some of them a few steps on real data), plus a class-aware term: the cross-entropy of the
    synthetic images under the sampled network, weighted by that network's training accuracy. The
    paper's partition-and-expansion augmentation is left out: it changes what an image of the
    release means. Paper values quoted are its CIFAR-10 settings.
    """

    method: Literal[DistillMethod.IDM] = DistillMethod.IDM
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(1000, ge=1, le=100_000)  # paper: 20,000
    lr_img: float = Field(1.0, gt=0, le=100)  # paper: 0.2 from real images; 1.0 (DM's) from noise
    batch_real: int = Field(256, ge=1, le=100_000)  # real images per class per matching step
    queue_size: int = Field(10, ge=1, le=1000)  # paper: 100
    new_model_every: int = Field(10, ge=1, le=100_000)  # paper: 30 (5 at ipc 1)
    models_trained: int = Field(1, ge=1, le=1000)  # networks trained per iteration; paper: 2
    train_steps: int = Field(1, ge=1, le=1000)  # SGD steps each of them takes; paper: 10 (the CPU cost)
    train_batch: int = Field(64, ge=1, le=100_000)  # real images per step; paper: 256
    lr_net: float = Field(0.01, gt=0, le=10)  # paper: 0.01, momentum 0.9, weight decay 5e-4
    ce_weight: float = Field(0.5, ge=0, le=100)  # paper: 0.5 at ipc 1 and 10 on CIFAR-10
    dsa: bool = True
    init: InitMode = InitMode.NOISE  # paper: real images; noise keeps patients' images out of the release
    match: EmbeddingMatch = EmbeddingMatch.MEAN  # mmd measured below mean on RetinaMNIST (docs/benchmarks.md)
    seed: int = Field(0, ge=0)
    network: NetworkSpec = NetworkSpec()


class DPDMConfig(StrictModel):
    """Differentially private distribution matching (DP-MERF style; Harder et al., AISTATS 2021).

    The real images are touched once, to release per class one noisy sum of clipped random features
    and a noisy count (one Gaussian mechanism, ``site_agent/distill/dpdm.py``); the synthetic images
    are then fitted to those noisy means, which is post-processing. The release is
    (``epsilon``, ``delta``)-differentially private under adding or removing one training image.
    Starting from real images would put them into the release outside the budget, so ``init`` is
    noise only; refinement rounds would touch the data again and are refused too.
    """

    method: Literal[DistillMethod.DPDM] = DistillMethod.DPDM
    ipc: int = Field(10, ge=1, le=1000)
    iterations: int = Field(300, ge=1, le=100_000)
    # DM's 1.0 barely moved the loss (unit-norm features give small gradients): on BreastMNIST 40 iterations
    # took it from 0.27 to 0.23 at lr 1 and to 0.09 at lr 10.
    lr_img: float = Field(10.0, gt=0, le=100)
    epsilon: float = Field(4.0, gt=0, le=20)  # above ~20 a guarantee says little
    delta: float = Field(1e-5, gt=0, le=1e-3)
    dsa: bool = True  # features averaged over 4 fixed DSA views of each image (False: the image alone)
    init: InitMode = InitMode.NOISE
    seed: int = Field(0, ge=0)  # the random networks, projections and views; never the noise
    network: NetworkSpec = NetworkSpec()

    @model_validator(mode="after")
    def _noise_init_only(self) -> DPDMConfig:
        if self.init != InitMode.NOISE:
            raise ValueError(f"dpdm starts from noise only: init '{self.init.value}' would put patient images into "
                             "the release outside the privacy budget")
        return self


DistillConfig = Annotated[DCConfig | DMConfig | MTTConfig | IDMConfig | DPDMConfig, Field(discriminator="method")]


class SoftLabelSpec(StrictModel):
    """Soft labels: the site trains a network (the teacher) on its own training images, and releases with each
    synthetic image the teacher's class probabilities instead of its class alone (``site_agent/distill/teacher.py``).

    A fixed synthetic set trained on such labels can carry more of what the site's images teach: "a label is worth
    a thousand images" (Qin et al., 2024), and SRe2L/RDED rely on it. They help only where the teacher is good: on
    the blood-cell federation (sites of 1,900-4,800 images) they took the pool from 0.689 to 0.764 balanced
    accuracy, on BreastMNIST and the long-tailed RetinaMNIST (sites of about 200 images) they cost 0.02-0.07
    (docs/benchmarks.md, "Soft labels"), so a run asks for them only when told to. A differentially private method
    never gets them: the teacher is not private.
    """

    teacher_epochs: int = Field(30, ge=1, le=1000)  # on a site's few thousand images, 30 epochs is about a minute
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)  # softmax(logits / temperature)
