"""User-facing errors: one line naming the file, the place and the reason."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with what the user handed us (file, option), never an internal bug.

    The CLI prints ``str(error)`` as one line and exits non-zero, without a traceback.
    """

    def __init__(self, file: str | Path | None, place: str | None, reason: str) -> None:
        self.file = str(file) if file is not None else None
        self.place = place
        self.reason = reason
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.file, self.place) if p]
        prefix = ":".join(parts)
        text = f"{prefix}: {self.reason}" if prefix else self.reason
        return " ".join(text.split())


class UnsupportedError(InputError):
    """The input is well formed but uses something verirepair does not support (yet)."""


class SettingsError(ValueError):
    """A setting out of its range (a negative budget, an unknown strategy option): the user's
    mistake, reported like bad input. A `ValueError` so that callers of the library keep working."""


class NotYet(Exception):
    """A capability that is planned but not built; reported as such, never faked (the CLI exits 4)."""
