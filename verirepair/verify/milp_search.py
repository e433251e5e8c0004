"""Complete search for piecewise-linear networks with many inputs: one MILP per open clause."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import progress
from ..bounds import BoundEngine, LayerBounds
from ..milp import MilpModel, encode_graph, solve_with_fallback
from ..spec import Clause, Region
from .deadline import Deadline
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings


def milp_search(engine: BoundEngine, region: Region, open_clauses: list[int], layers: LayerBounds,
                settings: VerifySettings, deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
                notes: list[str], deciders: dict[int, str] | None = None) -> SearchOutcome:
    """Decide each open clause of ``region`` exactly, given sound ``layers`` bounds on its box;
    ``notes`` collects solver remarks, ``deciders`` (when given) the solver that found each
    clause infeasible."""
    pre_bounds = [(l[0].cpu().numpy(), u[0].cpu().numpy()) for l, u in layers.pre_activation]
    for index in open_clauses:
        progress.search("milp")
        if deadline.expired():
            return SearchOutcome("timeout", None, 0)
        model, inputs, outputs = encode_graph(engine.graph, region.box, pre_bounds, region.clauses[index],
                                              margin=settings.milp_margin)
        result = solve_with_fallback(model, deadline.remaining(), settings.milp_solver)
        if result.note and result.note not in notes:
            notes.append(result.note)
        if result.status == "infeasible":
            if deciders is not None:
                deciders[index] = result.solver
            continue
        if result.status in ("feasible", "optimal") and result.x is not None:
            found = confirm(result.x[inputs])
            if found is None and not deadline.expired():
                deepest = _deepest_violation(model, inputs, outputs, region.clauses[index], settings, deadline)
                found = confirm(deepest) if deepest is not None else None
            if found is not None:
                return SearchOutcome("sat", found, 0)
            notes.append("MILP point not confirmed by onnxruntime")
            return SearchOutcome("unknown", None, 0)
        return SearchOutcome("timeout" if result.status == "timeout" or deadline.expired() else "unknown", None, 0)
    return SearchOutcome("proven", None, 0, solver_decided=True)


def _deepest_violation(model: MilpModel, inputs: np.ndarray, outputs: np.ndarray, clause: Clause,
                       settings: VerifySettings, deadline: Deadline) -> np.ndarray | None:
    """The input that violates ``clause`` most: argmin of ``t >= A_r·y - b_r`` (every row r).

    A feasibility solve may return any point of the *relaxed* clause ``A·y <= b + margin``, typically
    a vertex on its relaxed boundary, i.e. just outside the real violation region, which onnxruntime
    then rightly refuses even when the violation is deep elsewhere. The model keeps every constraint
    (the relaxed clause rows among them), so this only re-ranks its feasible points.
    """
    A = np.asarray(clause.A, dtype=np.float64)
    b = np.asarray(clause.b, dtype=np.float64).reshape(-1)
    low, high = model.lower[outputs], model.upper[outputs]
    row_lower = np.minimum(A * low, A * high).sum(axis=1) - b  # interval bound of each row
    t_lower = float(row_lower.max()) - 1.0 if np.all(np.isfinite(row_lower)) else -np.inf
    (t,) = model.add_variables([t_lower], [np.inf], name="t")  # the relaxed clause rows bound it above
    model.add_rows(np.hstack([A, -np.ones((A.shape[0], 1))]), np.concatenate([outputs, [t]]), -np.inf, b)
    model.set_objective([t], [1.0])
    result = solve_with_fallback(model, deadline.remaining(), settings.milp_solver)
    if result.status in ("feasible", "optimal") and result.x is not None:
        return result.x[inputs]
    return None
