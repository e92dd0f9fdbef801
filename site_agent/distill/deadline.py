"""The site's hard time limit on one request: made once when the request arrives, checked inside every long loop.

A :class:`Deadline` is the policy's ``max_seconds`` counted from the moment the site took the request.
The distillation, the expert and inner-loop trainings and the privacy report's models all call
:meth:`Deadline.check` between steps, so a request that asks for more than the site's time cannot run
on for longer than one step past it: :class:`shared.errors.TimeLimitReached` ends it and nothing is
released. (The engine's ``max_seconds`` argument is another thing: a soft stop after the iteration in
which it runs out, for benchmarks; the site uses this one.)

    >>> limit = Deadline.after(1800)
    >>> limit.check()  # raises TimeLimitReached once 1800 s have passed
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from shared.errors import TimeLimitReached


@dataclass(frozen=True)
class Deadline:
    """A ``time.monotonic()`` instant after which work must stop, and the limit it stands for (for the message).

    ``at`` None: no limit (a simulated site, where one operator plays every role).
    """

    at: float | None
    seconds: float = 0.0

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """A deadline ``seconds`` from now (``None``: none)."""
        return NO_LIMIT if seconds is None else cls(time.monotonic() + seconds, seconds)

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def left(self) -> float:
        """Seconds until the deadline (negative once past; infinite without one)."""
        return math.inf if self.at is None else self.at - time.monotonic()

    def check(self) -> None:
        """Return while there is time left.

        Raises:
            TimeLimitReached: the deadline has passed.
        """
        if self.passed():
            raise TimeLimitReached(self.seconds)


NO_LIMIT = Deadline(None)
