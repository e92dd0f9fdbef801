"""The versions of the software that made a release or a report, recorded beside it."""

from __future__ import annotations

import importlib.metadata
import platform

from shared import __version__

_PACKAGES = ("torch", "flwr", "cryptography", "medmnist")


def software_versions() -> dict[str, str]:
    """feddistill, Python and the packages whose versions change what a run produces ("unknown" if absent)."""
    versions = {"feddistill": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions
