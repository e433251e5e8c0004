"""HiGHS back end (highspy): the default, always-available MILP solver."""

from __future__ import annotations

import os
import sys

import numpy as np

from verirepair.milp.model import MilpModel
from verirepair.milp.result import MilpResult, MilpSettings, status_when_solved

try:
    import highspy
except ImportError:  # pragma: no cover - highspy is a hard dependency, but stay importable
    highspy = None


def _silence_banner() -> None:
    """HiGHS prints a two-line banner on the process's stdout (file descriptor 1, below Python)
    when the first `Highs` object is made, whatever its options; that broke ``verify --json``'s
    output whenever a MILP ran. The first object is made here, at import, with stdout pointed at
    /dev/null; later ones print nothing."""
    if highspy is None:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_silence_banner()


# What `MilpSettings.bound_only` switches off: every primal heuristic, and symmetry detection.
BOUND_ONLY_OPTIONS: dict[str, bool | float] = {
    "mip_heuristic_effort": 0.0, "mip_heuristic_run_feasibility_jump": False, "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False, "mip_heuristic_run_root_reduced_cost": False, "mip_detect_symmetry": False,
}


class HighsSolver:
    """`MilpSolver` backed by HiGHS; takes any model size."""

    name = "highs"

    def available(self) -> bool:
        return highspy is not None

    def accepts(self, model: MilpModel) -> tuple[bool, str]:
        if not self.available():
            return False, "highs: highspy is not installed"
        return True, ""

    def solve(self, model: MilpModel, time_limit_s: float,
              settings: MilpSettings | None = None) -> MilpResult:
        if not self.available():
            return MilpResult("error", None, None, self.name, "highspy is not installed")
        if time_limit_s <= 0:
            return MilpResult("timeout", None, None, self.name, "no time left")
        settings = settings or MilpSettings()
        h = highspy.Highs()
        options = {
            "output_flag": False, "time_limit": float(time_limit_s), "threads": settings.threads,
            "primal_feasibility_tolerance": settings.feasibility_tolerance,
            "mip_feasibility_tolerance": settings.feasibility_tolerance,
            "mip_rel_gap": settings.mip_rel_gap, "mip_abs_gap": settings.mip_abs_gap,
        }
        if settings.bound_only:
            options.update(BOUND_ONLY_OPTIONS)
        for key, value in options.items():
            h.setOptionValue(key, value)
        status = _pass_model(h, model)
        if status == highspy.HighsStatus.kError:
            return MilpResult("error", None, None, self.name, "HiGHS rejected the model")
        if settings.stop_below_objective is not None:
            h.setOptionValue("objective_target", float(settings.stop_below_objective))
        h.run()
        return _result_of(h, model)


def _pass_model(h: highspy.Highs, model: MilpModel) -> highspy.HighsStatus:
    """Hand the model to HiGHS as one row-wise (CSR) matrix plus flat numpy arrays."""
    rows = model.solver_rows()
    csr = rows.matrix
    return h.passModel(
        model.n_vars, model.n_constraints, int(csr.nnz),
        int(highspy.MatrixFormat.kRowwise.value), int(highspy.ObjSense.kMinimize.value),
        model.objective_offset, model.objective, model.lower, model.upper,
        rows.lower, rows.upper,
        csr.indptr.astype(np.int32), csr.indices.astype(np.int32), csr.data.astype(np.float64),
        model.is_integer.astype(np.int32))  # 1 = HighsVarType.kInteger, 0 = kContinuous


def _result_of(h: highspy.Highs, model: MilpModel) -> MilpResult:
    statuses = highspy.HighsModelStatus
    status = h.getModelStatus()
    info = h.getInfo()
    has_point = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_point else None
    objective = float(info.objective_function_value) if has_point else None
    if status in (statuses.kOptimal, statuses.kModelEmpty):
        if x is None:  # an empty model: every variable at a bound nearest zero
            x = np.clip(np.zeros(model.n_vars), model.lower, model.upper)
            objective = model.objective_value(x)
        bound = float(info.mip_dual_bound) if model.n_integer else objective
        return MilpResult(status_when_solved(model.has_objective), x, objective, "highs",
                          best_bound=bound)
    if status == statuses.kInfeasible or (
            status == statuses.kUnboundedOrInfeasible and _all_bounded(model)):
        return MilpResult("infeasible", None, None, "highs")
    if status in (statuses.kTimeLimit, statuses.kIterationLimit, statuses.kSolutionLimit,
                  statuses.kInterrupt, statuses.kObjectiveTarget):
        bound = float(info.mip_dual_bound) if model.n_integer else None
        if x is not None:
            return MilpResult("feasible", x, objective, "highs", f"stopped: {status.name}",
                              best_bound=bound)
        return MilpResult("timeout", None, None, "highs", f"stopped: {status.name}",
                          best_bound=bound)
    return MilpResult("error", None, None, "highs", f"HiGHS model status {status.name}")


def _all_bounded(model: MilpModel) -> bool:
    """With every variable bounded the objective cannot be unbounded, so "unbounded or
    infeasible" means infeasible."""
    return bool(np.all(np.isfinite(model.lower)) and np.all(np.isfinite(model.upper)))
