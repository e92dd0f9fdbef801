"""The site's own limits on what a coordinator may ask of it; the coordinator cannot override them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError, PolicyError
from shared.schemas import DistillMethod, DistillRequest, InitMode

log = logging.getLogger(__name__)


class SitePolicy(BaseModel):
    """Upper limits a site enforces on every distillation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_methods: list[DistillMethod] = list(DistillMethod)
    max_ipc: int = Field(50, ge=1)
    max_iterations: int = Field(5000, ge=1)
    allow_real_init: bool = False  # real-image init puts patient images into the release
    min_real_per_class: int = Field(10, ge=1)  # smaller classes are not distilled at all
    # Refuse to release a set in which any image correlates this much with a real image (see privacy.py).
    max_real_similarity: float = Field(0.95, gt=0, le=1)

    @classmethod
    def from_file(cls, path: Path) -> SitePolicy:
        """Read a JSON policy file.

        Raises:
            ConfigError: the file is missing or does not hold a valid policy.
        """
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise ConfigError(f"site policy file {path.name!r} not found") from exc
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"site policy file {path.name!r} is not a valid policy: {exc}") from exc

    def check(self, request: DistillRequest) -> None:
        """Refuse a request that exceeds this policy.

        Raises:
            PolicyError: naming the first limit the request exceeds.
        """
        config = request.distill
        if config.method not in self.allowed_methods:
            raise PolicyError(f"method {config.method.value!r} is not allowed by this site's policy")
        if config.ipc > self.max_ipc:
            raise PolicyError(f"ipc {config.ipc} exceeds this site's limit of {self.max_ipc}")
        if config.iterations > self.max_iterations:
            raise PolicyError(f"iterations {config.iterations} exceeds this site's limit of {self.max_iterations}")
        if config.init == InitMode.REAL and not self.allow_real_init:
            raise PolicyError("init 'real' would release patient images and is not allowed by this site's policy")
        if config.init == InitMode.REAL:
            log.warning("RELEASING SYNTHETIC IMAGES INITIALISED FROM REAL PATIENT IMAGES (policy allows init=real)")
