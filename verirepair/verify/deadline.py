"""The deadline checked throughout the search."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """``seconds`` from now on ``clock`` (wall-clock time; `time.process_time` for the same amount
    of work on an idle or a loaded machine), and no later than ``within`` when given (e.g. a
    CPU-time budget inside the wall-clock time a caller has left)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None,
                 within: Deadline | None = None) -> None:
        self.clock = clock or time.monotonic  # looked up now, so a test's patched clock is seen
        self.start = self.clock()
        self.end = self.start + seconds
        self.within = within

    @property
    def seconds(self) -> float:
        """The length it was given (or ``within``'s, when that is shorter)."""
        own = self.end - self.start
        return own if self.within is None else min(own, self.within.seconds)

    def remaining(self) -> float:
        own = max(0.0, self.end - self.clock())
        return own if self.within is None else min(own, self.within.remaining())

    def expired(self) -> bool:
        return self.clock() >= self.end or (self.within is not None and self.within.expired())

    def elapsed(self) -> float:
        return self.clock() - self.start


# Branch-and-bound iterations are kept near this length, so the deadline is checked often.
TARGET_ITERATION_SECONDS = 1.0


def paced_batch(batch: int, took: float, smallest: int, largest: int) -> int:
    """The next iteration's batch size: doubled (up to ``largest``) after an iteration shorter than
    `TARGET_ITERATION_SECONDS`, halved (down to ``smallest``) after one more than twice as long."""
    if took < TARGET_ITERATION_SECONDS:
        return min(2 * batch, largest)
    if took > 2 * TARGET_ITERATION_SECONDS:
        return max(batch // 2, smallest)
    return batch
