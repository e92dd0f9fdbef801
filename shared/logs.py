"""Logging for the command-line tools: our packages at INFO, everyone else's at WARNING."""

from __future__ import annotations

import logging

OUR_PACKAGES = ("shared", "site_agent", "coordinator")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in OUR_PACKAGES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
