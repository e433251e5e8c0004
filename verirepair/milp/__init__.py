"""Exact MILP encoding of piecewise-linear networks and the solver back ends (HiGHS, Gurobi)."""

from verirepair.milp.encode import INTERVAL_WIDENING, clause_relaxation, encode_graph
from verirepair.milp.gurobi_backend import GurobiSolver, licence_size_limit
from verirepair.milp.highs_backend import HighsSolver
from verirepair.milp.model import MilpModel
from verirepair.milp.result import MilpResult, MilpSettings, MilpStatus
from verirepair.milp.solvers import (
    MilpSolver,
    choose_solver,
    solve_with_fallback,
    solver_named,
)

__all__ = [
    "INTERVAL_WIDENING",
    "GurobiSolver",
    "HighsSolver",
    "MilpModel",
    "MilpResult",
    "MilpSettings",
    "MilpSolver",
    "MilpStatus",
    "choose_solver",
    "clause_relaxation",
    "encode_graph",
    "licence_size_limit",
    "solve_with_fallback",
    "solver_named",
]
