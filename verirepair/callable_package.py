"""Subpackages that share their name with an API function (`verirepair.verify`, `verirepair.bench`).

``verirepair`` re-exports the API functions `verirepair.api.verify` and `verirepair.api.bench`,
but importing the subpackage of the same name rebinds ``verirepair.verify`` (or ``.bench``) to the
subpackage. Such a subpackage is made callable here, calling the API function, so
``verirepair.verify(network, spec)`` works whichever of the two the name holds.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from . import api

        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def make_callable(name: str) -> None:
    """Make the loaded package ``name`` (``verirepair.<function of verirepair.api>``) callable."""
    sys.modules[name].__class__ = CallablePackage
