"""Gurobi back end (gurobipy), used when a licence allows the model size.

The licence bundled with the pip package is size-limited: it refuses models with more than 2000
variables or 2000 linear constraints (error 10010 at optimize time). `accepts` predicts that from
the model size; `solve` still catches the error, so a caller can fall back to HiGHS either way.
"""

from __future__ import annotations

import functools
import threading
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from verirepair.extras import MissingExtra, require
from verirepair.milp.model import MilpModel, SolverRows
from verirepair.milp.result import MilpResult, MilpSettings, status_when_solved

if TYPE_CHECKING:
    import gurobipy

# Gurobi's error number for "Model too large for size-limited license" (GRB.Error.SIZE_LIMIT_EXCEEDED).
SIZE_LIMIT_ERRNO = 10010
# The size limit of the restricted (pip) licence, for variables and for linear constraints alike.
RESTRICTED_SIZE_LIMIT = 2000


_PER_THREAD = threading.local()


def require_gurobipy() -> ModuleType:
    """gurobipy, imported on first use (`MissingExtra` naming the ``gurobi`` extra when absent)."""
    return require("gurobipy", "gurobi", "needed for --milp-solver gurobi")


def installed_gurobipy() -> ModuleType | None:
    """gurobipy, or None when it is not installed (``auto`` then uses HiGHS without a word)."""
    try:
        return require_gurobipy()
    except MissingExtra:
        return None


def _environment() -> gurobipy.Env | None:
    """One quiet Gurobi environment per thread (starting one checks the licence, ~0.1 s): Gurobi
    solves models of different threads in parallel only when their environments differ."""
    gurobipy = installed_gurobipy()
    if gurobipy is None:
        return None
    if not hasattr(_PER_THREAD, "env"):
        try:
            env = gurobipy.Env(empty=True)
            env.setParam("OutputFlag", 0)
            env.start()
            _PER_THREAD.env = env
        except gurobipy.GurobiError:
            _PER_THREAD.env = None
    return _PER_THREAD.env


@functools.lru_cache(maxsize=1)
def licence_size_limit() -> int | None:
    """The licence's model-size limit, or None when unrestricted (or Gurobi is unavailable).

    Gurobi has no query for this, so probe once: a trivial LP one variable over the restricted
    limit either solves or raises the size-limit error.
    """
    env = _environment()
    if env is None:
        return None
    gurobipy = require_gurobipy()
    probe = gurobipy.Model(env=env)
    try:
        probe.addMVar(RESTRICTED_SIZE_LIMIT + 1, ub=1.0)
        probe.optimize()
        return None
    except gurobipy.GurobiError as error:
        return RESTRICTED_SIZE_LIMIT if error.errno == SIZE_LIMIT_ERRNO else None
    finally:
        probe.dispose()


def _row_blocks(rows: SolverRows) -> list[tuple[np.ndarray, str, np.ndarray]]:
    """Split ``lo <= M x <= hi`` into Gurobi's one-sided senses: (row indices, sense, rhs).

    A ranged row becomes two rows; a row with no finite side is dropped."""
    lo, hi = rows.lower, rows.upper
    equal = np.isfinite(lo) & (lo == hi)
    less = np.isfinite(hi) & ~equal
    greater = np.isfinite(lo) & ~equal
    return [(np.flatnonzero(mask), sense, side[mask])
            for mask, sense, side in ((equal, "=", lo), (less, "<", hi), (greater, ">", lo))]


def gurobi_row_count(model: MilpModel) -> int:
    """How many linear constraints Gurobi will see (what its licence counts)."""
    return sum(int(rows.size) for rows, _, _ in _row_blocks(model.solver_rows()))


class GurobiSolver:
    """`MilpSolver` backed by Gurobi."""

    name = "gurobi"

    def available(self) -> bool:
        return _environment() is not None

    def accepts(self, model: MilpModel) -> tuple[bool, str]:
        if installed_gurobipy() is None:
            return False, "gurobi: gurobipy is not installed"
        if _environment() is None:
            return False, "gurobi: no valid licence"
        limit = licence_size_limit()
        n_rows = gurobi_row_count(model)
        if limit is not None and (model.n_vars > limit or n_rows > limit):
            return False, (f"gurobi: licence limited to {limit} variables/constraints, model has "
                           f"{model.n_vars} variables and {n_rows} constraints")
        return True, ""

    def solve(self, model: MilpModel, time_limit_s: float,
              settings: MilpSettings | None = None) -> MilpResult:
        env = _environment()
        if env is None:
            return MilpResult("error", None, None, self.name, "gurobi is not available")
        if time_limit_s <= 0:
            return MilpResult("timeout", None, None, self.name, "no time left")
        settings = settings or MilpSettings()
        gurobipy = require_gurobipy()
        m = gurobipy.Model(env=env)
        try:
            _configure(m, settings, time_limit_s)
            x = _build(m, model)
            m.optimize()
            return _result_of(m, x, model)
        except gurobipy.GurobiError as error:
            refused = error.errno == SIZE_LIMIT_ERRNO
            what = "size-limited licence refused the model" if refused else "Gurobi error"
            return MilpResult("error", None, None, self.name,
                              f"gurobi: {what} (error {error.errno}: {error})",
                              licence_refused=refused)
        finally:
            m.dispose()


def _configure(m: gurobipy.Model, settings: MilpSettings, time_limit_s: float) -> None:
    m.Params.OutputFlag = 0
    m.Params.TimeLimit = float(time_limit_s)
    m.Params.Threads = settings.threads
    # Gurobi's minimum for both tolerances is 1e-9.
    m.Params.FeasibilityTol = max(settings.feasibility_tolerance, 1e-9)
    m.Params.IntFeasTol = max(settings.integrality_tolerance, 1e-9)
    m.Params.MIPGap = settings.mip_rel_gap
    m.Params.MIPGapAbs = settings.mip_abs_gap
    if settings.bound_only:
        m.Params.Heuristics = 0.0
        m.Params.MIPFocus = 3  # work on the bound
    if settings.stop_at_bound is not None:
        m.Params.BestBdStop = settings.stop_at_bound
    if settings.stop_below_objective is not None:
        m.Params.BestObjStop = settings.stop_below_objective


def _build(m: gurobipy.Model, model: MilpModel) -> gurobipy.MVar:
    """Variables with addMVar, constraints with one addMConstr per sense over the CSR matrix."""
    grb = require_gurobipy().GRB
    vtype = np.where(model.is_integer, grb.INTEGER, grb.CONTINUOUS)
    x = m.addMVar(model.n_vars, lb=model.lower, ub=model.upper, vtype=vtype)
    solver_rows = model.solver_rows()
    for rows, sense, rhs in _row_blocks(solver_rows):
        if rows.size:
            m.addMConstr(solver_rows.matrix[rows], x, np.full(rows.size, sense), rhs)
    if model.n_vars:
        x.Obj = model.objective
    m.ObjCon = model.objective_offset
    return x


def _result_of(m: gurobipy.Model, x: gurobipy.MVar, model: MilpModel) -> MilpResult:
    grb = require_gurobipy().GRB
    status = m.Status
    has_point = m.SolCount > 0
    point = np.asarray(x.X, dtype=np.float64).reshape(-1) if has_point else None
    objective = float(m.ObjVal) if has_point else None
    if status == grb.OPTIMAL:
        bound = float(m.ObjBound) if m.IsMIP else objective
        return MilpResult(status_when_solved(model.has_objective), point, objective, "gurobi",
                          best_bound=bound)
    if status == grb.INFEASIBLE or (status == grb.INF_OR_UNBD and _all_bounded(model)):
        return MilpResult("infeasible", None, None, "gurobi")
    if status in (grb.TIME_LIMIT, grb.INTERRUPTED, grb.SOLUTION_LIMIT, grb.ITERATION_LIMIT,
                  grb.NODE_LIMIT, grb.USER_OBJ_LIMIT):
        # A stopped MIP's proven bound is ObjBound (never the incumbent's objective).
        bound = float(m.ObjBound) if m.IsMIP else None
        if point is not None:
            return MilpResult("feasible", point, objective, "gurobi", f"stopped: status {status}",
                              best_bound=bound)
        return MilpResult("timeout", None, None, "gurobi", f"stopped: status {status}", best_bound=bound)
    return MilpResult("error", None, None, "gurobi", f"Gurobi status {status}")


def _all_bounded(model: MilpModel) -> bool:
    """With every variable bounded, "infeasible or unbounded" means infeasible."""
    return bool(np.all(np.isfinite(model.lower)) and np.all(np.isfinite(model.upper)))
