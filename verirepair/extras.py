"""Optional dependencies, imported where first needed: a missing one is one line naming the extra
to install (``pip install 'verirepair[extra]'``), never a traceback from deep inside a run."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from .errors import InputError


class MissingExtra(InputError):
    """An optional package that the requested work needs is not installed (the CLI: exit 2)."""

    def __init__(self, module: str, extra: str, purpose: str, path: str | None = None) -> None:
        self.module, self.extra = module, extra
        super().__init__(path, None, f"{module} is not installed ({purpose}): pip install 'verirepair[{extra}]'")


def require(module: str, extra: str, purpose: str, path: str | None = None) -> ModuleType:
    """``module`` imported, or `MissingExtra` saying that the extra ``extra`` provides it;
    ``purpose`` says what it is needed for ("needed to read .h5 files"); ``path``: the file that
    needs it, named in the message."""
    try:
        return import_module(module)
    except ImportError:
        raise MissingExtra(module, extra, purpose, path) from None
