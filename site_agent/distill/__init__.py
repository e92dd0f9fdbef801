"""Distillation methods behind one function, :func:`distill` (``engine``); each method is a module named after it."""

from site_agent.distill.engine import SyntheticSet, distill

__all__ = ["SyntheticSet", "distill"]
