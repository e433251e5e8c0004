"""The deadline checked throughout the search."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """``seconds`` from now on ``clock`` (wall-clock time; tests that need the same amount of work
    on a loaded machine pass `time.process_time`)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or time.monotonic  # looked up now, so a test's patched clock is seen
        self.start = self.clock()
        self.end = self.start + seconds

    @property
    def seconds(self) -> float:
        """The length it was given."""
        return self.end - self.start

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.end

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
