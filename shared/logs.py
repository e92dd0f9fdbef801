"""Logging and error reporting for the command-line tools: our packages at INFO, others at WARNING."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from shared.errors import FedDistillError

OUR_PACKAGES = ("shared", "site_agent", "coordinator")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in OUR_PACKAGES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def run_cli(app: Callable[[], object]) -> None:
    """Run a command-line app: logging set up, our errors shown as one clear message with exit code 1."""
    configure_logging()
    try:
        app()
    except FedDistillError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        sys.exit(1)
