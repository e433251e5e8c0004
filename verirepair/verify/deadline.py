"""Wall-clock deadline checked throughout the search."""

from __future__ import annotations

import time


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    @property
    def seconds(self) -> float:
        """The length it was given."""
        return self.end - self.start

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start


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
