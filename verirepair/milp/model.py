"""`MilpModel`: one solver-neutral mixed-integer linear program, stored sparsely.

    minimise   c·x + offset
    subject to row_lower <= M x <= row_upper,   lower <= x <= upper,   x_i integer where is_integer

The encoder builds a model in bulk (a whole layer per call, numpy-vectorised); the back ends in
`highs_backend.py` / `gurobi_backend.py` read it as a CSR matrix plus flat arrays. Nothing here knows
about a solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

IndexArray = np.ndarray  # int64, 1-D: global variable (or row) indices

# Solvers silently drop constraint coefficients below a threshold (HiGHS: |a| < 1e-9, its
# ``small_matrix_value``; Gurobi treats |a| < 1e-13 as zero). Dropping a_rc·x_c moves the row's
# activity by up to |a_rc|·max|x_c|; with zero-width inputs the rows of a layer are equalities
# pinned to a few ulps, so the dropped terms alone made a feasible network encoding "infeasible"
# (a wrong unsat on collins_rul_cnn, whose fc_1 has float32 weights down to 6e-39). `solver_rows`
# removes these coefficients itself and widens each row by their largest contribution: the result
# admits every point of the exact model, so "infeasible" stays a proof.
SMALLEST_SOLVER_COEFFICIENT = 1e-9


@dataclass(frozen=True)
class SolverRows:
    """The constraint rows as a solver may take them: no coefficient below
    `SMALLEST_SOLVER_COEFFICIENT` in magnitude, each row a superset of the exact one."""

    matrix: sp.csr_array
    lower: np.ndarray
    upper: np.ndarray


class MilpModel:
    """A growable MILP: add variables and constraint rows in blocks, then hand it to a solver."""

    def __init__(self) -> None:
        self._lower = np.zeros(0, dtype=np.float64)
        self._upper = np.zeros(0, dtype=np.float64)
        self._is_integer = np.zeros(0, dtype=bool)
        self._name_blocks: list[tuple[int, str]] = []  # (first index, prefix), in order
        self._row_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # global rows, cols, vals
        self._row_lower = np.zeros(0, dtype=np.float64)
        self._row_upper = np.zeros(0, dtype=np.float64)
        self._objective = np.zeros(0, dtype=np.float64)
        self.objective_offset = 0.0
        self._csr: sp.csr_array | None = None

    # ---- sizes and read-only views -------------------------------------------------------------
    @property
    def n_vars(self) -> int:
        return int(self._lower.shape[0])

    @property
    def n_constraints(self) -> int:
        return int(self._row_lower.shape[0])

    @property
    def n_integer(self) -> int:
        return int(self._is_integer.sum())

    @property
    def lower(self) -> np.ndarray:
        return self._lower.copy()

    @property
    def upper(self) -> np.ndarray:
        return self._upper.copy()

    @property
    def is_integer(self) -> np.ndarray:
        return self._is_integer.copy()

    @property
    def row_lower(self) -> np.ndarray:
        return self._row_lower.copy()

    @property
    def row_upper(self) -> np.ndarray:
        return self._row_upper.copy()

    @property
    def objective(self) -> np.ndarray:
        """Dense objective coefficients, one per variable (minimised)."""
        return self._objective.copy()

    @property
    def has_objective(self) -> bool:
        return bool(np.any(self._objective != 0.0))

    @property
    def matrix(self) -> sp.csr_array:
        """The constraint matrix [n_constraints, n_vars] in CSR form (duplicates summed)."""
        if self._csr is None:
            if self._row_chunks:
                rows = np.concatenate([c[0] for c in self._row_chunks])
                cols = np.concatenate([c[1] for c in self._row_chunks])
                vals = np.concatenate([c[2] for c in self._row_chunks])
            else:
                rows = cols = np.zeros(0, dtype=np.int64)
                vals = np.zeros(0, dtype=np.float64)
            csr = sp.csr_array((vals, (rows, cols)), shape=(self.n_constraints, self.n_vars))
            csr.sum_duplicates()
            csr.eliminate_zeros()
            self._csr = csr
        return self._csr

    def solver_rows(self) -> SolverRows:
        """The rows with every coefficient below `SMALLEST_SOLVER_COEFFICIENT` moved into the row's
        bounds: ``|a_rc|·max(|lower_c|, |upper_c|)`` per removed entry, on both sides, rounded outward.
        Computed from the variable bounds as they are now (tightening later only shrinks the
        contributions); an unbounded variable with a tiny coefficient frees its row's sides."""
        csr = self.matrix
        tiny = np.abs(csr.data) < SMALLEST_SOLVER_COEFFICIENT
        if not tiny.any():
            return SolverRows(csr, self.row_lower, self.row_upper)
        rows = np.repeat(np.arange(self.n_constraints), np.diff(csr.indptr))[tiny]
        cols = csr.indices[tiny]
        reach = np.maximum(np.abs(self._lower[cols]), np.abs(self._upper[cols]))
        slack = np.zeros(self.n_constraints)
        np.add.at(slack, rows, np.abs(csr.data[tiny]) * reach)
        slack = np.nextafter(slack * (1.0 + 1e-12), np.inf)
        with np.errstate(invalid="ignore"):  # -inf - inf cannot occur: slack >= 0
            lower = np.nextafter(self._row_lower - slack, -np.inf)
            upper = np.nextafter(self._row_upper + slack, np.inf)
        kept = csr.copy()
        kept.data[tiny] = 0.0
        kept.eliminate_zeros()
        touched = slack > 0
        return SolverRows(kept, np.where(touched, lower, self._row_lower), np.where(touched, upper, self._row_upper))

    def variable_name(self, index: int) -> str:
        if not 0 <= index < self.n_vars:
            raise IndexError(f"variable {index} out of range (model has {self.n_vars})")
        starts = [start for start, _ in self._name_blocks]
        block = int(np.searchsorted(starts, index, side="right")) - 1
        start, prefix = self._name_blocks[block]
        return f"{prefix}[{index - start}]"

    # ---- building -----------------------------------------------------------------------------
    def add_variables(self, lower: ArrayLike, upper: ArrayLike, *, integer: bool = False,
                      name: str = "x") -> IndexArray:
        """Add one variable per entry of ``lower``/``upper`` (1-D, same length); return their indices."""
        lo = np.asarray(lower, dtype=np.float64).reshape(-1)
        hi = np.asarray(upper, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape:
            raise ValueError(f"lower has {lo.size} entries but upper has {hi.size}")
        if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
            raise ValueError(f"NaN bound for variables {name}")
        start = self.n_vars
        if lo.size:
            self._name_blocks.append((start, name))
        self._lower = np.concatenate([self._lower, lo])
        self._upper = np.concatenate([self._upper, hi])
        self._is_integer = np.concatenate([self._is_integer, np.full(lo.size, integer)])
        self._objective = np.concatenate([self._objective, np.zeros(lo.size)])
        self._csr = None
        return np.arange(start, start + lo.size, dtype=np.int64)

    def add_binaries(self, count: int, *, name: str = "delta") -> IndexArray:
        return self.add_variables(np.zeros(count), np.ones(count), integer=True, name=name)

    def tighten_bounds(self, indices: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Intersect the bounds of ``indices`` with ``[lower, upper]``.

        An entry whose intersection would be empty is left unchanged: two *sound* bounds on the same
        quantity always intersect, so an empty intersection can only be float rounding, and making
        the model infeasible because of it would be unsound.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), idx.shape)
        hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), idx.shape)
        new_lo = np.maximum(self._lower[idx], lo)
        new_hi = np.minimum(self._upper[idx], hi)
        ok = new_lo <= new_hi
        np.maximum.at(self._lower, idx[ok], lo[ok])
        np.minimum.at(self._upper, idx[ok], hi[ok])

    def add_rows_coo(self, rows: ArrayLike, cols: ArrayLike, values: ArrayLike,
                     lower: ArrayLike, upper: ArrayLike) -> IndexArray:
        """Add ``len(lower)`` rows given as triplets; ``rows`` are local (0 = first new row),
        ``cols`` are global variable indices. Duplicate (row, col) entries are summed."""
        lo = np.asarray(lower, dtype=np.float64).reshape(-1)
        hi = np.asarray(upper, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape:
            raise ValueError(f"row lower has {lo.size} entries but row upper has {hi.size}")
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        c = np.asarray(cols, dtype=np.int64).reshape(-1)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if not (r.shape == c.shape == v.shape):
            raise ValueError("rows, cols and values must have the same length")
        if r.size and (r.min() < 0 or r.max() >= lo.size):
            raise ValueError("local row index out of range")
        if c.size and (c.min() < 0 or c.max() >= self.n_vars):
            raise ValueError("column index refers to a variable that does not exist")
        if not np.all(np.isfinite(v)):
            raise ValueError("constraint coefficients must be finite")
        start = self.n_constraints
        self._row_chunks.append((r + start, c, v))
        self._row_lower = np.concatenate([self._row_lower, lo])
        self._row_upper = np.concatenate([self._row_upper, hi])
        self._csr = None
        return np.arange(start, start + lo.size, dtype=np.int64)

    def add_rows(self, coefficients: np.ndarray | sp.sparray | sp.spmatrix, columns: ArrayLike,
                 lower: ArrayLike, upper: ArrayLike) -> IndexArray:
        """Add rows ``lower <= coefficients @ x[columns] <= upper`` (coefficients: [rows, len(columns)])."""
        coo = sp.coo_array(coefficients)
        cols = np.asarray(columns, dtype=np.int64).reshape(-1)
        if coo.shape[1] != cols.size:
            raise ValueError(f"coefficients have {coo.shape[1]} columns but {cols.size} variables given")
        n_rows = coo.shape[0]
        lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (n_rows,))
        hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), (n_rows,))
        return self.add_rows_coo(coo.row, cols[coo.col], coo.data, lo, hi)

    def set_objective(self, indices: ArrayLike, coefficients: ArrayLike, offset: float = 0.0) -> None:
        """Replace the objective by ``sum coefficients[k] * x[indices[k]] + offset`` (minimised).

        The model can be re-solved with different objectives (e.g. one per output for bound
        tightening) by calling this again."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        coef = np.asarray(coefficients, dtype=np.float64).reshape(-1)
        if idx.shape != coef.shape:
            raise ValueError(f"{idx.size} objective indices but {coef.size} coefficients")
        self._objective = np.zeros(self.n_vars)
        np.add.at(self._objective, idx, coef)
        self.objective_offset = float(offset)

    # ---- checking -----------------------------------------------------------------------------
    def max_violation(self, x: ArrayLike) -> float:
        """Largest violation of any bound, row or integrality by the point ``x`` (0 when feasible)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.n_vars:
            raise ValueError(f"point has {x.size} entries, model has {self.n_vars} variables")
        ax = self.matrix @ x
        parts = [np.zeros(1), self._lower - x, x - self._upper, self._row_lower - ax,
                 ax - self._row_upper, np.abs(x - np.round(x))[self._is_integer]]
        return float(max(np.max(p) if p.size else 0.0 for p in parts))

    def objective_value(self, x: ArrayLike) -> float:
        return float(self._objective @ np.asarray(x, dtype=np.float64).reshape(-1) + self.objective_offset)

    def __repr__(self) -> str:
        return (f"MilpModel({self.n_vars} variables ({self.n_integer} integer), "
                f"{self.n_constraints} constraints, {self.matrix.nnz} non-zeros)")
