"""Which function distills with which method: a method is the module named after it, which registers itself.

``site_agent/distill/<method>.py`` (the value of its :class:`DistillMethod`) decorates its
``distill_<method>`` function with :func:`register`; :func:`method_for` imports that module the first
time the method is asked for. Adding a method is adding its file (and its config in ``shared.schemas``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from shared.methods import DistillMethod
from site_agent.distill.accounting import DPRelease

# (real_by_class, config, num_classes, device, progress, *, deadline, observer, start_from, time_limit, [guide],
#  [expert_cache_dir], [min_real_per_class]) -> (synthetic images (K * ipc, C, H, W), loss per kept iteration
#  [, DPRelease for a private method])
DistillFn = Callable[..., tuple[torch.Tensor, list[float]] | tuple[torch.Tensor, list[float], DPRelease]]
FnT = TypeVar("FnT", bound=DistillFn)


@dataclass(frozen=True)
class Method:
    """A registered method and the optional inputs it takes."""

    distill: DistillFn
    matches_guide: bool  # refinement rounds: takes the global model as ``guide`` (stands in for a random network)
    caches_experts: bool  # takes ``expert_cache_dir``: site-private expert trajectories kept between runs
    # Differentially private: takes every class of the task and ``min_real_per_class``, chooses the classes
    # from its own noisy counts, and returns its ``DPRelease`` third.
    private: bool = False


_METHODS: dict[DistillMethod, Method] = {}


def register(
    method: DistillMethod, *, matches_guide: bool = True, caches_experts: bool = False, private: bool = False
) -> Callable[[FnT], FnT]:
    """Decorator: ``method`` is distilled by the decorated function."""

    def add(fn: FnT) -> FnT:
        _METHODS[method] = Method(fn, matches_guide, caches_experts, private)
        return fn

    return add


def method_for(method: DistillMethod) -> Method:
    """The registered method, importing ``site_agent.distill.<method>`` on first use."""
    if method not in _METHODS:
        importlib.import_module(f"{__package__}.{method.value}")
    return _METHODS[method]
