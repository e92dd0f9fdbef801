"""The frame every distillation method runs in, written once.

:func:`seeded` gives a run its random streams from its seed, so a seed reproduces its set.
:class:`Iterations` runs a method's iterations: the progress bar, the soft stop at a wall-time
deadline (never before one iteration is kept), the check of the site's hard time limit before each
iteration, the loss record, the observer call after each kept iteration and a log line now and then.
A method writes only what one iteration does (and checks the time limit inside its own long loops).

The bar is drawn only when a person watches (stderr is a terminal), with log lines printed above it.
Without one (a SuperNode's log file, a pipe) there is no bar to corrupt the log: a line every
``log_every`` iterations and at least every :data:`LOG_SECONDS`, with the time elapsed and left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import trange
from tqdm.contrib.logging import logging_redirect_tqdm

from site_agent.distill.deadline import NO_LIMIT, Deadline
from site_agent.distill.matching import Observer, past

LOG_SECONDS = 10.0  # the longest silence between two progress lines

@dataclass(frozen=True)
class Streams:
    """A run's random streams beside torch's global one (which initialises networks)."""

    gen: torch.Generator  # real batches, initial images, minibatch order
    rng: np.random.Generator  # DSA seeds and other NumPy draws


def seeded(seed: int) -> Streams:
    """Seed torch's global generator and return fresh streams, all from ``seed``."""
    torch.manual_seed(seed)
    return Streams(torch.Generator().manual_seed(seed), np.random.default_rng(seed))


class Iterations:
    """Up to ``total`` iterations of one method; iterate for the iteration index, :meth:`record` each kept one.

    Args:
        method: the name in progress bars and logs ("DC", "MTT", ...).
        total: iterations asked for.
        log: the method's logger.
        log_every: an info line every this many iterations (and after the last).
        describe: the info line's text for a loss, e.g. ``lambda loss: f"matching loss {loss:.4f}"``.
        images: the current synthetic images (N, C, H, W) in pixel space, for the observer.
        progress: show a progress bar when stderr is a terminal (log lines are written either way).
        deadline: ``time.monotonic()`` after which no new iteration starts (``None``: no limit).
        observer: called with (iterations kept, images) after every kept iteration.
        time_limit: the site's hard limit on the request, checked before every iteration: past it,
            :class:`shared.errors.TimeLimitReached` ends the run.
    """

    def __init__(
        self,
        method: str,
        total: int,
        *,
        log: logging.Logger,
        log_every: int,
        describe: Callable[[float], str],
        images: Callable[[], torch.Tensor],
        progress: bool,
        deadline: float | None,
        observer: Observer | None,
        time_limit: Deadline = NO_LIMIT,
    ) -> None:
        self.method, self.total, self.time_limit = method, total, time_limit
        self.log, self.log_every, self.describe = log, log_every, describe
        self.images, self.progress, self.deadline, self.observer = images, progress, deadline, observer
        self.history: list[float] = []  # the loss of every kept iteration
        self._started = self._last_line = time.monotonic()

    def __iter__(self) -> Iterator[int]:
        bar = self.progress and sys.stderr.isatty()
        self._started = self._last_line = time.monotonic()
        with logging_redirect_tqdm() if bar else nullcontext():
            for iteration in trange(self.total, desc=f"{self.method} distill", disable=not bar, leave=False):
                self.time_limit.check()
                if self.history and past(self.deadline):
                    self.log.warning("%s: wall-time limit reached after %d of %d iterations", self.method, iteration,
                                     self.total)
                    return
                yield iteration

    def record(self, iteration: int, loss: float) -> None:
        """Keep a finished iteration's loss, show the set to the observer, and log now and then."""
        self.history.append(loss)
        if self.observer:
            self.observer(len(self.history), self.images())
        now = time.monotonic()
        if iteration % self.log_every == 0 or iteration == self.total - 1 or now - self._last_line >= LOG_SECONDS:
            done, elapsed = iteration + 1, now - self._started
            self.log.info("%s iteration %d/%d: %s (%.0f s so far, about %.0f s left)", self.method, done, self.total,
                          self.describe(loss), elapsed, elapsed / done * (self.total - done))
            self._last_line = now
