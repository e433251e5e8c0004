"""How far a benchmark run is, on standard error: one rewritten line (done/total, elapsed) on a
terminal, one line per finished instance otherwise (a log file, CI)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from .records import InstanceRecord

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations only, never evaluated


class Progress:
    def __init__(self, total: int, done: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, done
        self.stream = stream or sys.stderr
        self.on_terminal = self.stream.isatty()
        self.started = time.monotonic()

    def __enter__(self) -> Self:
        if self.on_terminal:
            self._show("")
        return self

    def finished(self, record: InstanceRecord) -> None:
        self.done += 1
        name = f"{Path(record.onnx).stem}/{Path(record.vnnlib).stem}"
        if self.on_terminal:
            self._show(f", last: {record.result} {name}")
        else:
            print(f"[{self.done}/{self.total}] {record.result} {name} ({record.seconds:.1f} s)",
                  file=self.stream, flush=True)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.on_terminal:
            print(file=self.stream, flush=True)

    def _show(self, last: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"\rinstances {self.done}/{self.total}, {elapsed:.0f} s elapsed{last}\033[K",
              end="", file=self.stream, flush=True)
