"""A live progress line for long runs: stage, search phase, open branches, weakest bound, elapsed / budget.

The CLI installs a `ProgressLine` (`showing`) only when stderr is a terminal and ``--quiet`` is not
given, so pipes and CI logs stay clean. The searches and the check-and-fix loop call `stage` and
`search` at their existing progress points; with no line installed these return at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import SupportsFloat, TextIO

# The searches' updates are drawn at most this often (seconds); a new stage (rare) at once.
REDRAW_INTERVAL = 0.2

_CURRENT: ContextVar[ProgressLine | None] = ContextVar("verirepair_progress", default=None)


class ProgressLine:
    """One line on ``stream``, redrawn in place with ``\\r`` and blanked by `clear`."""

    def __init__(self, stream: TextIO, budget: float | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = REDRAW_INTERVAL) -> None:
        self.stream, self.budget, self.clock, self.interval = stream, budget, clock, interval
        self.started = clock()
        self.stage_name = ""
        self.iteration: int | None = None
        self.phase = ""
        self.detail = ""
        self.drawn_at = -float("inf")
        self.width = 0  # characters of the line on screen now

    def stage(self, name: str, iteration: int | None = None) -> None:
        """A step of the outer loop; ``iteration`` stays shown until another one is given."""
        self.stage_name, self.phase, self.detail = name, "", ""
        if iteration is not None:
            self.iteration = iteration
        self._draw(self.clock())

    def search(self, phase: str, open_branches: int | None = None,
               bound: float | Callable[[], SupportsFloat] | None = None) -> None:
        """A search's state; ``bound`` may be a function, called only when the line is redrawn."""
        now = self.clock()
        if now - self.drawn_at < self.interval:
            return
        parts = [] if open_branches is None else [f"{open_branches} open"]
        if bound is not None:
            parts.append(f"bound {float(bound() if callable(bound) else bound):.4g}")
        self.phase, self.detail = phase, ", ".join(parts)
        self._draw(now)

    def text(self, now: float) -> str:
        stage = " ".join(p for p in (f"iteration {self.iteration}" if self.iteration is not None else "",
                                     self.stage_name) if p)
        search = f"{self.phase}: {self.detail}" if self.detail else self.phase
        limit = f"/{self.budget:.0f} s" if self.budget is not None else " s"
        return " | ".join(p for p in (stage, search, f"{now - self.started:.0f}{limit}") if p)

    def _draw(self, now: float) -> None:
        # One column short of the terminal: a wrapped line could not be redrawn in place.
        text = self.text(now)[: max(1, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width, self.drawn_at = len(text), now

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def terminal_line(stream: TextIO, budget: float | None = None) -> ProgressLine | None:
    """A progress line on ``stream`` when it is a terminal, else None (nothing is shown)."""
    return ProgressLine(stream, budget) if stream.isatty() else None


class _BlankingFirst:
    """A text stream whose writes blank the progress line first: results printed on stdout share
    the terminal with the line on stderr."""

    def __init__(self, stream: TextIO, line: ProgressLine) -> None:
        self.stream, self.line = stream, line

    def write(self, text: str) -> int:
        self.line.clear()
        return self.stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


@contextlib.contextmanager
def showing(line: ProgressLine | None) -> Iterator[None]:
    """Report to ``line`` (None: nowhere) within the block; the line is blanked before anything is
    printed on stdout, and at the block's end."""
    token = _CURRENT.set(line)
    try:
        if line is None:
            yield
        else:
            with contextlib.redirect_stdout(_BlankingFirst(sys.stdout, line)):  # type: ignore[type-var]
                yield
    finally:
        _CURRENT.reset(token)
        if line is not None:
            line.clear()


def stage(name: str, iteration: int | None = None) -> None:
    """Report a step of the check-and-fix loop (verify, repair, export, re-verify)."""
    line = _CURRENT.get()
    if line is not None:
        line.stage(name, iteration)


def search(phase: str, open_branches: int | None = None, bound: float | Callable[[], SupportsFloat] | None = None) -> None:
    """Report a search's state: its phase, open branches and weakest bound of an open branch."""
    line = _CURRENT.get()
    if line is not None:
        line.search(phase, open_branches, bound)


class LogHandler(logging.StreamHandler):
    """Log records and the progress line share stderr: the line is blanked before a record is
    written, and drawn again at its next update."""

    def emit(self, record: logging.LogRecord) -> None:
        line = _CURRENT.get()
        if line is not None:
            line.clear()
        super().emit(record)
