"""What a MILP back end takes (`MilpSettings`) and gives back (`MilpResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from verirepair.errors import SettingsError

MilpStatus = Literal["feasible", "infeasible", "optimal", "timeout", "error"]


@dataclass(frozen=True)
class MilpSettings:
    """Solver tolerances and resources, the same for every back end.

    The defaults are tighter than the solvers' own (1e-6 / 1e-7 feasibility, 1e-5 / 1e-6
    integrality, 1e-4 relative gap) because the models are small and exactness matters more than
    speed: with an integrality tolerance of 1e-5 a "zero" ReLU binary lets ``u·1e-5`` leak through,
    and a 1e-4 gap makes a reported optimum differ visibly from the true one. None of these
    tolerances makes an "infeasible" answer unsound: that is what the clause margin in
    `encode_graph` is for; a feasible point is only a candidate until it is replayed.
    """

    feasibility_tolerance: float = 1e-9
    integrality_tolerance: float = 1e-9
    mip_rel_gap: float = 1e-9
    mip_abs_gap: float = 1e-9
    threads: int = 1
    # Only the solver's proven bound is wanted (bounding one neuron): primal heuristics are
    # switched off. HiGHS spent about half of each 25-binary bound solve on eran's 9x200 net in
    # its sub-MIP heuristics (RINS/RENS), whose points a bound does not need.
    bound_only: bool = False
    # Early stops for questions about the sign of a minimum ("is this neuron stable?"): stop as
    # soon as the proven bound is at least ``stop_at_bound`` (the answer is yes), or as soon as a
    # point with objective below ``stop_below_objective`` is found (the answer is no). The result
    # is the solve as it stood: its ``best_bound`` is still a proven bound. None: solve to the end.
    # HiGHS honours ``stop_below_objective`` (its ``objective_target`` option) but has no native
    # stop at a dual bound, so it ignores ``stop_at_bound``; a Python callback that interrupts its
    # solve is not used, because such callbacks from solves running in several threads at once
    # can deadlock on the interpreter lock. Gurobi honours both (BestBdStop, BestObjStop).
    stop_at_bound: float | None = None
    stop_below_objective: float | None = None

    def __post_init__(self) -> None:
        for name in ("feasibility_tolerance", "integrality_tolerance", "mip_rel_gap", "mip_abs_gap"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise SettingsError(f"MilpSettings.{name} must be a finite number >= 0, got {value}")
        for name in ("stop_at_bound", "stop_below_objective"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise SettingsError(f"MilpSettings.{name} must be a finite number or None, got {value}")
        if self.threads < 1:
            raise SettingsError(f"MilpSettings.threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class MilpResult:
    """The outcome of one solve.

    ``status``: ``optimal`` (proven optimal for a non-zero objective), ``feasible`` (a point was found:
    any point of a pure feasibility model, or the incumbent when time ran out on an optimisation),
    ``infeasible``, ``timeout`` (no point found in time), ``error`` (``note`` says why).
    ``x`` is a point over all model variables when one was found. ``best_bound`` is the solver's proven
    lower bound on the objective (the sound side for bound tightening; ``objective`` may be above it
    by the MIP gap). ``licence_refused`` marks a size-limited licence refusing the model, so a caller
    can retry with another back end.
    """

    status: MilpStatus
    x: np.ndarray | None
    objective: float | None
    solver: str
    note: str = ""
    best_bound: float | None = None
    licence_refused: bool = False


def status_when_solved(has_objective: bool) -> MilpStatus:
    """``optimal`` for a real optimisation, ``feasible`` for a pure feasibility model."""
    return "optimal" if has_objective else "feasible"
