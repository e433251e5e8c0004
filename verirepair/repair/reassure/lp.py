"""The one place REASSURE solves linear programs (scipy's HiGHS interface, always installed).

Everything else builds dense/sparse arrays and calls `solve_lp`; no other module imports a solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog


@dataclass(frozen=True)
class LpResult:
    status: str  # "optimal" | "infeasible" | "unbounded" | "error"
    x: np.ndarray | None
    objective: float


def solve_lp(c: np.ndarray, A_ub=None, b_ub=None, A_eq=None, b_eq=None, bounds=None,
             time_limit: float | None = None, interior_point: bool = False) -> LpResult:
    """minimise ``c·x`` s.t. ``A_ub x <= b_ub``, ``A_eq x = b_eq``, ``bounds`` (default: x free).

    ``interior_point``: HiGHS's interior-point method (with crossover to a vertex) instead of its
    default choice (dual simplex), which is much faster on large dense LPs (see `chebyshev_centre`).
    """
    if bounds is None:
        bounds = (None, None)
    options = {"presolve": True}
    if time_limit is not None:
        options["time_limit"] = max(1.0, float(time_limit))
    if A_ub is not None and sp.issparse(A_ub):
        A_ub = sp.csr_array(A_ub)
    if A_eq is not None and sp.issparse(A_eq):
        A_eq = sp.csr_array(A_eq)
    result = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs-ipm" if interior_point else "highs", options=options)
    status = {0: "optimal", 2: "infeasible", 3: "unbounded"}.get(result.status, "error")
    x = np.asarray(result.x, dtype=np.float64) if result.x is not None and status == "optimal" else None
    return LpResult(status, x, float(result.fun) if status == "optimal" else float("nan"))
