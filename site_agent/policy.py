"""The site's own limits on what a coordinator may ask of it; the coordinator cannot override them.

A deployed site reads its policy from the JSON file named by the node config's ``policy-file``
(``site-agent policy init`` writes the defaults; ``site-agent policy show`` explains each field).
Unknown fields are refused, so a misspelt limit is an error rather than silently no limit.

Every knob of a request that scales what it costs the site (iterations, images per class, real images
per step, the network's width and depth, each method's loops, queues and experts) has a cap here, and
:meth:`SitePolicy.check` refuses a request above any of them, naming the cap. The caps bound what one
step can cost; ``max_seconds`` bounds the whole request: past it, the site stops the work and refuses
(``site_agent.distill.deadline``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError, LocalConfigError, PolicyError
from shared.fields import settings_problem
from shared.methods import DCConfig, DistillMethod, DMConfig, DPDMConfig, IDMConfig, InitMode, MTTConfig, NetworkSpec
from shared.schemas import DistillRequest, ModelSpec, TrainingSpec

log = logging.getLogger(__name__)

# The CPU presets (shared/presets.py) and the federation's defaults ask for width 64, depth 3, 64-128 real
# images per class, DC loops of 10, IDM's queue of 10 trained one step of 64 images, MTT's 5 experts of 15
# epochs and 20 steps: the default caps are the papers' settings, at least twice what a default run asks.


class DCLimits(BaseModel):
    """Caps on DC's loops (see ``shared.methods.DCConfig``); 0 in a request means the paper's loops for its ipc."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_outer_loop: int = Field(50, ge=1, description="most gradient-matching steps per iteration (paper: 10-50)")
    max_inner_loop: int = Field(
        50, ge=1, description="most epochs the network trains on the synthetic set between them (paper: 10-50)"
    )


class IDMLimits(BaseModel):
    """Caps on IDM's queue of partly trained networks (see ``shared.schemas.IDMConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queue_size: int = Field(100, ge=1, description="most networks kept in the queue (memory; paper: 100)")
    max_models_trained: int = Field(4, ge=1, description="most queued networks trained per iteration (paper: 2)")
    max_train_steps: int = Field(10, ge=1, description="most SGD steps each of them takes per iteration (paper: 10)")
    max_train_batch: int = Field(256, ge=1, description="most real images in each of those steps (paper: 256)")


class MTTLimits(BaseModel):
    """Caps on MTT's cost knobs (see ``shared.schemas.MTTConfig``); experts are trained at the site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_syn_steps: int = Field(50, ge=1, description="most unrolled student steps per iteration (memory and time)")
    max_train_epochs_expert: int = Field(
        50, ge=2, description="most epochs each expert trains for (also bounds expert_epochs and max_start_epoch)"
    )
    max_num_experts: int = Field(20, ge=1, description="most expert trajectories trained at the site")


class PrivacyLimits(BaseModel):
    """What the site measures before each release (``site_agent.privacy``) and the limits that block it.

    A limit set to null is reported but never blocks.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    report: bool = Field(True, description="measure memorisation, membership inference and utility before release")
    max_mia_auc: float | None = Field(
        # Measured (docs/privacy.md): the upper ends of noise-initialised sets reached 0.54-0.72, of BreastMNIST's
        # real-image ones 0.76-0.77; at chance, 136 members against 39 held-out images give 0.60 (0.66 at worst of 20).
        0.75, ge=0.5, le=1, description="block a release whose strongest membership attack may reach this AUC: the "
        "upper end of its bootstrap 95 % interval is compared, so a small site's wide interval blocks rather than "
        "passes, and another draw of the report's randomness rarely turns a block into a pass"
    )
    max_mia_tpr_at_0_1pct_fpr: float | None = Field(
        # At chance the upper end is about 4 / (held-out images + 1): 0.12 with 39 held-out images (0.18 at worst of 20).
        0.25, ge=0, le=1, description="block a release whose strongest attack may find this share of members at "
        "0.1 % FPR (at zero false positives when the site holds under 1000 held-out images): the upper end of its "
        "bootstrap 95 % interval is compared"
    )
    min_nearest_real_quantile: float | None = Field(
        0.01, ge=0, le=1, description="block a release with a synthetic image closer to a real one than this quantile "
        "of real-to-real nearest distances in its class (pixel or feature space); a count with no interval: one "
        "flagged image blocks"
    )
    shadow_models: int = Field(
        4, ge=0, le=64, description="shadow models of the LiRA attack, each trained on a set distilled from a random "
        "half of the site's images (0: threshold attack only)"
    )
    max_seconds: float | None = Field(
        1800, gt=0, description="time the report may take, within the request's own max_seconds; shadow models that "
        "do not fit are skipped (null: only the request's limit)"
    )
    train_epochs: int = Field(300, ge=1, le=10_000, description="epochs of every model the report trains")


class BudgetLimits(BaseModel):
    """How much one coordinator may have of this site, whatever run ids it uses (``site_agent.budget``).

    Counted per coordinator key (the fingerprint of the pinned key the site seals to), over a rolling
    window and over the site's lifetime. An honest run asks, per round, one release, one tuning and two
    evaluations; the default study plan (45 runs of one round) takes 45, 45 and 90.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_hours: float = Field(24, gt=0, le=24 * 366, description="length of the rolling window, in hours")
    max_evaluations_per_window: int = Field(
        200, ge=1, description="most evaluate answers (counts on the test images) in one window"
    )
    max_evaluations_lifetime: int = Field(2000, ge=1, description="most evaluate answers ever")
    max_tunings_per_window: int = Field(
        100, ge=1, description="most tuning answers (counts on the training images) in one window"
    )
    max_tunings_lifetime: int = Field(1000, ge=1, description="most tuning answers ever")
    max_release_attempts_per_window: int = Field(
        100, ge=1, description="most distill requests taken on in one window: each attempt counts, released, "
        "blocked by the privacy limits or stopped, and so does a request refused for a spent budget"
    )
    max_release_attempts_lifetime: int = Field(1000, ge=1, description="most distill requests ever taken on")

    @classmethod
    def unlimited(cls, cap: int) -> BudgetLimits:
        """Every count capped at ``cap`` (a simulated site's)."""
        return cls(**{name: cap for name in cls.model_fields if name.startswith("max_")})


class AnswerLimits(BaseModel):
    """What one evaluate or tune answer may tell about the site's images (``site_agent.evaluate``).

    Every count an answer releases gets discrete Laplace noise scaled to what one image can change in it,
    so that one answer is ``epsilon``-differentially private towards each test (evaluate) or training
    (tune) image. Answers compose: a coordinator with n answers has up to n times the loss (docs/privacy.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float | None = Field(
        1.0, gt=0, le=20, description="privacy loss of one evaluate or tune answer; smaller is noisier: at 1 the "
        "pooled figures of the dev sets moved by 0.01 to 0.07 (docs/benchmarks.md); null: exact counts, which a "
        "crafted model can read single images off"
    )


class SitePolicy(BaseModel):
    """Upper limits a site enforces on every distillation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_methods: list[DistillMethod] = Field(list(DistillMethod), description="methods this site runs")
    max_ipc: int = Field(50, ge=1, description="most synthetic images per class in one release")
    max_iterations: int = Field(5000, ge=1, description="most distillation iterations")
    max_batch_real: int = Field(
        256, ge=1, description="most real images per class in one matching step (dc, dm, idm batch_real)"
    )
    max_net_width: int = Field(128, ge=8, description="widest network a request may ask for (channels per layer)")
    max_net_depth: int = Field(4, ge=1, description="deepest network a request may ask for (conv blocks)")
    max_train_epochs: int = Field(
        1000, ge=1, description="most epochs of a training the site runs for a request: the global model's, which "
        "it trains itself on the pooled sets before it scores that model (evaluate, tune), and its soft-label teacher's"
    )
    max_pool_images: int = Field(
        20_000, ge=1, description="most synthetic images in the pool the site trains a scored model on"
    )
    max_seconds: float | None = Field(
        # As long as the coordinator waits for a set (distill_timeout): MTT's CPU preset takes about 30 minutes.
        3600, gt=0, description="wall-time limit of one request in seconds, distillation and privacy report "
        "together: when it runs out the site stops the work and refuses the request, releasing nothing; privacy "
        "shadow models that would not fit are skipped instead (null: no limit)"
    )
    allow_real_init: bool = Field(
        False, description="allow init 'real', which puts patient images into the release"
    )
    allow_mean_init: bool = Field(
        False, description="allow init 'means': each synthetic image starts as the average of a cluster of at least "
        "10 of the class's local images (k-means), which the distillation then moves; the near-copy check and the "
        "privacy report judge the result as they judge any release. Measured, its sets sit near the near-copy limit "
        "and the membership attack tells members apart better than from noise, hence opt-in"
    )
    release_soft_labels: bool = Field(
        True, description="when a run asks for soft labels, label released images with the class probabilities of a "
        "network (the teacher) the site trains on its own training images and keeps: K numbers per image, which carry "
        "what that network learned and which the privacy report measures with the images (false: each image's class "
        "only, whatever the run asks)"
    )
    require_dp: bool = Field(
        False, description="run only differentially private methods (dpdm), whose release has a formal guarantee"
    )
    max_epsilon: float | None = Field(
        None, gt=0, description="lifetime differential-privacy budget towards one coordinator: a dpdm request is "
        "refused, before any work, when the epsilon of every dpdm release this site made to that coordinator and "
        "this one, composed by the PLD accountant at lifetime_delta, would exceed it (null: no budget; the site "
        "still keeps the ledger)"
    )
    max_epsilon_per_release: float | None = Field(
        None, gt=0, description="largest epsilon one dpdm request may ask for (null: any the request schema allows)"
    )
    lifetime_delta: float = Field(
        1e-5, gt=0, le=1e-3, description="the delta at which the site states its composed lifetime epsilon"
    )
    min_real_per_class: int = Field(10, ge=1, description="classes with fewer local images are not distilled")
    max_real_similarity: float = Field(
        0.95, gt=0, le=1, description="never release a synthetic image that correlates more than this with a local "
        "image (the near-copy check)"
    )
    withhold_near_copies: bool = Field(
        True, description="a set holding near copies (max_real_similarity) goes out without them, the count in the "
        "site's log and audit log (false: the whole set is refused). A set of nothing but near copies, and a dpdm set, "
        "whose guarantee covers the set as distilled, are refused either way"
    )
    dc: DCLimits = Field(DCLimits(), description="caps on DC's loops")
    idm: IDMLimits = Field(IDMLimits(), description="caps on IDM's queue of trained networks")
    mtt: MTTLimits = Field(MTTLimits(), description="caps on MTT's expensive settings")
    privacy: PrivacyLimits = Field(PrivacyLimits(), description="the privacy report and the limits it enforces")
    release_class_counts: bool = Field(
        True, description="put the site's real training images per class in the signed manifest (aggregate counts, "
        "no image), so the coordinator can correct the global model for class imbalance"
    )
    class_count_rounding: int = Field(
        1, ge=1, description="round the released class counts to a multiple of this (1: exact)"
    )
    release_tuning_counts: bool = Field(
        True, description="count, on the site's training images, what the global model predicts under each "
        "candidate class-imbalance correction (confusion counts, no image), so the coordinator can tune it"
    )
    max_evaluations_per_run: int = Field(
        20, ge=1, description="most times one run id may have the site score a model on its test or training images "
        "(each is an oracle on that data; a run asks up to three per round: tuning counts and two evaluations); "
        "the coordinator names its runs, so budget bounds what all of its runs together get"
    )
    budget: BudgetLimits = Field(
        BudgetLimits(), description="what one coordinator may have of this site over a rolling window and over "
        "the site's lifetime, whatever run ids it uses"
    )
    answers: AnswerLimits = Field(
        AnswerLimits(), description="the noise on every evaluate and tune answer (its privacy loss per answer)"
    )
    require_approval: bool = Field(
        False, description="hold every release for manual approval before it is sent (see site_agent/approval.py)"
    )
    approvals_dir: str | None = Field(
        None, description="where held releases wait for approval (null: <cache-dir>/approvals)"
    )

    @classmethod
    def permissive(
        cls, allow_real_init: bool, privacy_report: bool = True, shadow_models: int = 0, train_epochs: int = 300,
        require_approval: bool = False,
    ) -> SitePolicy:
        """A simulated site's policy: one operator plays every role, so it takes the run's own settings.

        Every cost cap is the request schema's own bound and there is no time limit. The privacy report is
        measured (its models trained for the global model's ``train_epochs``) and shown, but no limit
        blocks a release. ``require_approval`` holds each release for review, as a deployed site's policy may.
        """
        cap = 100_000
        return cls(
            allowed_methods=list(DistillMethod), max_ipc=1000, max_iterations=cap, max_batch_real=cap,
            max_net_width=cap, max_net_depth=cap, max_train_epochs=cap, max_pool_images=cap, max_seconds=None, allow_real_init=allow_real_init,
            allow_mean_init=True,
            max_evaluations_per_run=cap, budget=BudgetLimits.unlimited(cap), require_approval=require_approval,
            answers=AnswerLimits(epsilon=None),  # exact counts: one operator plays every party
            dc=DCLimits(max_outer_loop=cap, max_inner_loop=cap),
            idm=IDMLimits(max_queue_size=cap, max_models_trained=cap, max_train_steps=cap, max_train_batch=cap),
            mtt=MTTLimits(max_syn_steps=cap, max_train_epochs_expert=cap, max_num_experts=cap),
            privacy=PrivacyLimits(report=privacy_report, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                                  min_nearest_real_quantile=None, shadow_models=shadow_models,
                                  train_epochs=train_epochs),
        )

    @classmethod
    def from_file(cls, path: Path) -> SitePolicy:
        """Read a JSON policy file.

        The error's message may reach the coordinator (a SuperNode reads its policy for every request), so
        it never names the file: ``local_detail`` does, for the site's operator.

        Raises:
            LocalConfigError: the file is missing, is not JSON, or does not hold a valid policy (naming the field).
        """
        where = f"policy file: {path}"
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise LocalConfigError(
                "the site's policy file is missing", local_detail=where,
                hint="write one with `site-agent policy init`, or fix the policy file option",
            ) from exc
        except OSError as exc:
            raise LocalConfigError(f"the site's policy file cannot be read ({type(exc).__name__})",
                                   local_detail=where) from exc
        except UnicodeDecodeError as exc:
            raise LocalConfigError(f"the site's policy file is not a valid policy: not UTF-8 text (byte {exc.start})",
                                   local_detail=where) from exc
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LocalConfigError(
                f"the site's policy file is not a valid policy: not JSON (line {exc.lineno}, column {exc.colno})",
                local_detail=where,
            ) from exc
        except ValidationError as exc:
            raise LocalConfigError(
                f"the site's policy file is not a valid policy: {settings_problem(exc, cls)}", local_detail=where,
                hint="`site-agent policy show` lists the fields and their meaning",
            ) from exc

    def released_class_counts(self, counts: list[int]) -> dict[int, int] | None:
        """The per-class training counts this policy lets leave the site (rounded), or None when withheld."""
        if not self.release_class_counts:
            return None
        step = self.class_count_rounding
        return {c: round(n / step) * step for c, n in enumerate(counts)}

    def check(self, request: DistillRequest) -> None:
        """Refuse a request that exceeds this policy.

        Raises:
            PolicyError: naming the first limit the request exceeds (the request's field and the policy's cap).
        """
        config = request.distill
        if config.method not in self.allowed_methods:
            raise PolicyError(f"method {config.method.value!r} is not allowed by this site's policy")
        if self.require_dp and not isinstance(config, DPDMConfig):
            raise PolicyError(f"method {config.method.value!r} has no differential-privacy guarantee and this "
                              "site's policy sets require_dp")
        if isinstance(config, DPDMConfig):  # the lifetime budget is kept by site_agent.budget, over every release
            for limit, field in ((self.max_epsilon_per_release, "max_epsilon_per_release"),
                                 (self.max_epsilon, "max_epsilon")):
                if limit is not None and config.epsilon > limit:
                    raise PolicyError(f"epsilon {config.epsilon:g} exceeds this site's limit of {limit:g} ({field})")
        _cap("ipc", config.ipc, self.max_ipc, "max_ipc")
        _cap("iterations", config.iterations, self.max_iterations, "max_iterations")
        self._check_network("network", config.network)
        if request.global_model is not None:
            self._check_network("global_model.network", request.global_model.network)
        if isinstance(config, DCConfig | DMConfig | IDMConfig):
            _cap("batch_real", config.batch_real, self.max_batch_real, "max_batch_real")
        if isinstance(config, DCConfig):
            self._check_dc(config)
        if isinstance(config, IDMConfig):
            for field in ("queue_size", "models_trained", "train_steps", "train_batch"):
                _cap(f"idm {field}", getattr(config, field), getattr(self.idm, f"max_{field}"), f"idm.max_{field}")
        if isinstance(config, MTTConfig):
            for field in ("syn_steps", "train_epochs_expert", "num_experts"):
                _cap(f"mtt {field}", getattr(config, field), getattr(self.mtt, f"max_{field}"), f"mtt.max_{field}")
        if request.soft_labels is not None:
            _cap("teacher epochs", request.soft_labels.teacher_epochs, self.max_train_epochs, "max_train_epochs")
        if config.init == InitMode.MEANS and not self.allow_mean_init:
            raise PolicyError("init 'means' starts the release from averages of local images and is not allowed by "
                              "this site's policy (allow_mean_init)")
        if config.init == InitMode.REAL and not self.allow_real_init:
            raise PolicyError("init 'real' would release patient images and is not allowed by this site's policy")
        if config.init == InitMode.REAL:
            log.warning("RELEASING SYNTHETIC IMAGES INITIALISED FROM REAL PATIENT IMAGES (policy allows init=real)")

    def check_scored_model(self, model: ModelSpec, training: TrainingSpec | None = None) -> None:
        """Refuse to score (evaluate, tune) a model larger, or trained longer, than this policy allows.

        Raises:
            PolicyError: naming the cap the model's network or training exceeds.
        """
        self._check_network("model.network", model.network)
        if training is not None:
            _cap("training epochs", training.epochs, self.max_train_epochs, "max_train_epochs")

    def _check_network(self, name: str, network: NetworkSpec) -> None:
        _cap(f"{name} width", network.width, self.max_net_width, "max_net_width")
        _cap(f"{name} depth", network.depth, self.max_net_depth, "max_net_depth")

    def _check_dc(self, config: DCConfig) -> None:
        # The request's 0 stands for the paper's loops at its ipc: the cap holds for the loops that would run.
        from site_agent.distill.dc import paper_loops  # the engine (torch) loads only when a request is checked

        paper_outer, paper_inner = paper_loops(config.ipc)
        _cap("dc outer_loop", config.outer_loop or paper_outer, self.dc.max_outer_loop, "dc.max_outer_loop")
        _cap("dc inner_loop", config.inner_loop or paper_inner, self.dc.max_inner_loop, "dc.max_inner_loop")


def _cap(name: str, value: int, limit: int, field: str) -> None:
    """Refuse ``value`` of the request's ``name`` above the policy's ``field``.

    Raises:
        PolicyError: "<name> <value> exceeds this site's limit of <limit> (<field>)".
    """
    if value > limit:
        raise PolicyError(f"{name} {value} exceeds this site's limit of {limit} ({field})")


def write_default_policy(path: Path, overwrite: bool = False) -> SitePolicy:
    """Write the default policy as JSON to ``path``; returns it.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false.
    """
    if path.exists() and not overwrite:
        raise ConfigError(f"site policy file {path.name!r} already exists; not overwriting it", hint="pass --force")
    policy = SitePolicy()
    path.write_text(policy.model_dump_json(indent=2) + "\n")
    return policy


def describe(policy: SitePolicy) -> list[tuple[str, str, str]]:
    """(field, value, meaning) for every setting, nested limits as ``<group>.<field>`` (``mtt.max_syn_steps``)."""
    rows = []
    for name, field in SitePolicy.model_fields.items():
        value = getattr(policy, name)
        if isinstance(value, BaseModel):
            rows += [(f"{name}.{n}", json.dumps(getattr(value, n)), f.description or "")
                     for n, f in type(value).model_fields.items()]
        else:
            shown = [m.value for m in value] if name == "allowed_methods" else value
            rows.append((name, json.dumps(shown), field.description or ""))
    return rows
