"""The site's own limits on what a coordinator may ask of it; the coordinator cannot override them.

A deployed site reads its policy from the JSON file named by the node config's ``policy-file``
(``site-agent policy init`` writes the defaults; ``site-agent policy show`` explains each field).
Unknown fields are refused, so a misspelt limit is an error rather than silently no limit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError, PolicyError
from shared.schemas import DistillMethod, DistillRequest, DPDMConfig, InitMode, MTTConfig, first_problem

log = logging.getLogger(__name__)


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
        # Measured (docs/privacy.md): noise-initialised sets reached 0.50-0.61, real-image ones 0.58-0.69.
        0.65, ge=0.5, le=1, description="block a release whose strongest membership attack reaches this AUC"
    )
    max_mia_tpr_at_0_1pct_fpr: float | None = Field(
        0.1, ge=0, le=1, description="block a release whose strongest attack finds this share of members at 0.1 % FPR "
        "(at zero false positives when the site holds under 1000 held-out images)"
    )
    min_nearest_real_quantile: float | None = Field(
        0.01, ge=0, le=1, description="block a release with a synthetic image closer to a real one than this quantile "
        "of real-to-real nearest distances in its class (pixel or feature space)"
    )
    shadow_models: int = Field(
        4, ge=0, le=64, description="shadow models of the LiRA attack, each trained on a set distilled from a random "
        "half of the site's images (0: threshold attack only)"
    )
    max_seconds: float | None = Field(
        1800, gt=0, description="time the report may take; shadow models that do not fit are skipped (null: no limit)"
    )
    train_epochs: int = Field(300, ge=1, le=10_000, description="epochs of every model the report trains")


class SitePolicy(BaseModel):
    """Upper limits a site enforces on every distillation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_methods: list[DistillMethod] = Field(list(DistillMethod), description="methods this site runs")
    max_ipc: int = Field(50, ge=1, description="most synthetic images per class in one release")
    max_iterations: int = Field(5000, ge=1, description="most distillation iterations")
    max_seconds: float | None = Field(
        None, gt=0, description="wall-time limit of one distillation in seconds, for the engine to stop at (null: none)"
    )
    allow_real_init: bool = Field(
        False, description="allow init 'real', which puts patient images into the release"
    )
    require_dp: bool = Field(
        False, description="run only differentially private methods (dpdm), whose release has a formal guarantee"
    )
    max_epsilon: float | None = Field(
        None, gt=0, description="largest epsilon a dpdm request may ask for (null: any the request schema allows)"
    )
    min_real_per_class: int = Field(10, ge=1, description="classes with fewer local images are not distilled")
    max_real_similarity: float = Field(
        0.95, gt=0, le=1, description="refuse a set in which an image correlates this much with a local image"
    )
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
        20, ge=1, description="most times one run may have the site score a model on its test or training images "
        "(each is an oracle on that data; a run asks up to three per round: tuning counts and two evaluations)"
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

        The privacy report is measured (its models trained for the global model's ``train_epochs``)
        and shown, but no limit blocks a release. ``require_approval`` holds each release for review, as
        a deployed site's policy may.
        """
        cap = 100_000
        return cls(
            allowed_methods=list(DistillMethod), max_ipc=1000, max_iterations=cap, allow_real_init=allow_real_init,
            max_evaluations_per_run=cap, require_approval=require_approval,
            mtt=MTTLimits(max_syn_steps=cap, max_train_epochs_expert=cap, max_num_experts=cap),
            privacy=PrivacyLimits(report=privacy_report, max_mia_auc=None, max_mia_tpr_at_0_1pct_fpr=None,
                                  min_nearest_real_quantile=None, shadow_models=shadow_models,
                                  train_epochs=train_epochs),
        )

    @classmethod
    def from_file(cls, path: Path) -> SitePolicy:
        """Read a JSON policy file.

        Raises:
            ConfigError: the file is missing, is not JSON, or does not hold a valid policy (naming the field).
        """
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise ConfigError(f"site policy file {path.name!r} not found") from exc
        except OSError as exc:
            raise ConfigError(f"site policy file {path.name!r} cannot be read ({type(exc).__name__})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"site policy file {path.name!r} is not a valid policy: not UTF-8 text "
                              f"(byte {exc.start})") from exc
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"site policy file {path.name!r} is not a valid policy: not JSON (line {exc.lineno}, column {exc.colno})"
            ) from exc
        except ValidationError as exc:
            raise ConfigError(
                f"site policy file {path.name!r} is not a valid policy: {first_problem(exc)}",
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
            PolicyError: naming the first limit the request exceeds.
        """
        config = request.distill
        if config.method not in self.allowed_methods:
            raise PolicyError(f"method {config.method.value!r} is not allowed by this site's policy")
        if self.require_dp and not isinstance(config, DPDMConfig):
            raise PolicyError(f"method {config.method.value!r} has no differential-privacy guarantee and this "
                              "site's policy sets require_dp")
        if isinstance(config, DPDMConfig) and self.max_epsilon is not None and config.epsilon > self.max_epsilon:
            raise PolicyError(f"epsilon {config.epsilon:g} exceeds this site's limit of {self.max_epsilon:g} "
                              "(max_epsilon)")
        if config.ipc > self.max_ipc:
            raise PolicyError(f"ipc {config.ipc} exceeds this site's limit of {self.max_ipc}")
        if config.iterations > self.max_iterations:
            raise PolicyError(f"iterations {config.iterations} exceeds this site's limit of {self.max_iterations}")
        if isinstance(config, MTTConfig):
            self._check_mtt(config)
        if config.init == InitMode.REAL and not self.allow_real_init:
            raise PolicyError("init 'real' would release patient images and is not allowed by this site's policy")
        if config.init == InitMode.REAL:
            log.warning("RELEASING SYNTHETIC IMAGES INITIALISED FROM REAL PATIENT IMAGES (policy allows init=real)")

    def _check_mtt(self, config: MTTConfig) -> None:
        for field in ("syn_steps", "train_epochs_expert", "num_experts"):
            value, limit = getattr(config, field), getattr(self.mtt, f"max_{field}")
            if value > limit:
                raise PolicyError(f"mtt {field} {value} exceeds this site's limit of {limit}")


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
    """(field, value, meaning) for every setting, nested limits as ``mtt.<field>`` and ``privacy.<field>``."""
    rows = []
    for name, field in SitePolicy.model_fields.items():
        value = getattr(policy, name)
        if isinstance(value, MTTLimits | PrivacyLimits):
            rows += [(f"{name}.{n}", json.dumps(getattr(value, n)), f.description or "")
                     for n, f in type(value).model_fields.items()]
        else:
            shown = [m.value for m in value] if name == "allowed_methods" else value
            rows.append((name, json.dumps(shown), field.description or ""))
    return rows
