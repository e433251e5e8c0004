"""One interface over the MILP back ends, and the choice between them.

HiGHS is the default and always there; Gurobi is used under "auto" when it is installed and its
licence allows the model size. Only `highs_backend` and `gurobi_backend` import a solver package.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

from verirepair.errors import InputError, UnsupportedError
from verirepair.milp.gurobi_backend import GurobiSolver, require_gurobipy
from verirepair.milp.highs_backend import HighsSolver
from verirepair.milp.model import MilpModel
from verirepair.milp.result import MilpResult, MilpSettings

PREFERENCES = ("auto", "highs", "gurobi")

logger = logging.getLogger(__name__)


class MilpSolver(Protocol):
    """What every back end offers."""

    name: str

    def available(self) -> bool:
        """Whether the solver package is installed and usable (licence included)."""
        ...

    def accepts(self, model: MilpModel) -> tuple[bool, str]:
        """Whether this solver can take ``model``, and if not, why (one line)."""
        ...

    def solve(self, model: MilpModel, time_limit_s: float,
              settings: MilpSettings | None = None) -> MilpResult:
        """Solve within ``time_limit_s`` seconds; never raises for solver trouble (status "error")."""
        ...


def solver_named(name: str) -> MilpSolver:
    if name == "highs":
        return HighsSolver()
    if name == "gurobi":
        require_gurobipy()  # asked for by name: a missing package is the one line naming its extra
        return GurobiSolver()
    raise InputError(None, "solver", f"unknown MILP solver {name!r} (expected highs or gurobi)")


def check_preference(preference: str) -> None:
    """Refuse a solver choice that is none of `PREFERENCES` (before any work, where a caller can)."""
    if preference not in PREFERENCES:
        raise InputError(None, "solver", f"unknown MILP solver {preference!r} (expected auto, highs or gurobi)")


def choose_solver(model: MilpModel, preference: str = "auto") -> tuple[MilpSolver, str]:
    """Pick a back end for ``model``; returns it with a note saying why another was passed over.

    ``auto``: Gurobi if installed and its licence takes the model, else HiGHS. ``highs``/``gurobi``
    force one and raise `UnsupportedError` when it cannot take the model.
    """
    check_preference(preference)
    if preference != "auto":
        solver = solver_named(preference)
        if not solver.available():
            raise UnsupportedError(None, "solver", f"{preference} requested but not available "
                                   f"(is the package installed and licensed?)")
        ok, why = solver.accepts(model)
        if not ok:
            raise UnsupportedError(None, "solver", why)
        return solver, ""
    gurobi, highs = GurobiSolver(), HighsSolver()
    note = ""
    if gurobi.available():
        ok, why = gurobi.accepts(model)
        if ok:
            return gurobi, ""
        note = f"{why}; using HiGHS"
    if not highs.available():
        raise UnsupportedError(None, "solver", "no MILP solver available (install highspy)")
    return highs, note


def solve_with_fallback(model: MilpModel, time_limit_s: float, preference: str = "auto",
                        settings: MilpSettings | None = None) -> MilpResult:
    """Choose a solver and solve; under ``auto``, retry with HiGHS (in the time left) when Gurobi's
    licence refuses the model at solve time. The result's ``note`` records every switch."""
    started = time.monotonic()
    solver, note = choose_solver(model, preference)
    result = solver.solve(model, time_limit_s, settings)
    if result.licence_refused and preference == "auto":
        note = _joined(note, f"{result.note}; using HiGHS")
        left = time_limit_s - (time.monotonic() - started)
        result = HighsSolver().solve(model, left, settings)
    note = _joined(note, result.note)
    logger.debug("MILP with %d variables: %s by %s%s", model.n_vars, result.status, result.solver,
                 f" ({note})" if note else "")
    return dataclasses.replace(result, note=note)


def _joined(*notes: str) -> str:
    return "; ".join(n for n in notes if n)
