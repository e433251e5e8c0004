"""The minimal affine patch of one linear region, by one linear program.

On a region ``P = {x : A x <= b}`` the network is ``W x + c``. We look for an affine correction
``p(x) = C x + d`` of the outputs such that

* **repair**: for every violation clause of the property, one chosen row ``a·y <= β`` of it is
  refuted on all of ``P`` with a margin: ``a·(W x + c + p(x)) >= β + margin`` for all ``x`` in ``P``;
* **harmlessness** ("cone" constraints): ``a_r·p(x) >= 0`` for every row ``a_r`` of every clause, for
  all ``x`` in the domain box ``D``. A safe output stays safe when such a vector is added (each
  clause keeps its refuting row), and when every row is a difference of two outputs or one output,
  so does any *partial* patch (the soft-thresholded ``p`` that the patch network produces near the
  region). That is what makes overlapping patches of adjacent regions harmless (see `patch.py`);
* **minimality**: the objective is ``t = max over x in P of ||p(x)||_inf`` (REASSURE's sup-norm).

"for all x in P" constraints are made finite with LP duality, which works in any dimension
without enumerating vertices: for a non-empty polytope, ``min_{Ax<=b} u·x + v >= 0`` holds iff
some ``λ >= 0`` has ``Aᵀλ = -u`` and ``v - bᵀλ >= 0`` (one block of dual variables per constraint).
"for all x in D" over a box is made finite with one auxiliary variable per input:
``min_{x in D} w·x = Σ_j min(w_j lo_j, w_j hi_j)``.

With ``affine=False`` the patch is a constant vector (``C = 0``): each "for all" constraint then
reduces to one precomputed LP minimum, which keeps high-dimensional inputs (MNIST) cheap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .lp import solve_lp
from .regions import LinearRegion

# At most this many combinations of refuting rows (one per clause) are tried; beyond it, rows
# are chosen greedily at the region's centre.
MAX_ROW_COMBINATIONS = 16


@dataclass(frozen=True)
class AffinePatch:
    C: np.ndarray  # [m, n]
    d: np.ndarray  # [m]
    norm: float  # max over the region of ||p(x)||_inf (the LP objective)
    rows: tuple[int, ...]  # the refuting row chosen per clause (index into the clause)
    cone: bool  # whether the harmlessness constraints were imposed

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.atleast_2d(x) @ self.C.T + self.d

    def bound_on_box(self, lower: np.ndarray, upper: np.ndarray) -> float:
        """``K``: max over the box of ``|p_o(x)|`` over all outputs o (exact for an affine map)."""
        mid, half = (upper + lower) / 2, (upper - lower) / 2
        return float(np.max(np.abs(self.C @ mid + self.d) + np.abs(self.C) @ half))


class PatchInfeasible(Exception):
    pass


def _region_minimum(region: LinearRegion, u: np.ndarray) -> float:
    """``min u·x`` over the region. Its box is passed as variable bounds and only the rows the box
    does not imply stay constraints: the same polytope (the region lies in its box), a smaller LP
    (an MNIST region: 512 rows instead of 2,080)."""
    rows = region.beyond_box
    result = solve_lp(u, region.A[rows], region.b[rows], bounds=list(zip(region.lower, region.upper)))
    if result.status != "optimal":
        raise PatchInfeasible(f"region LP {result.status}")
    return result.objective


def minimal_patch(region: LinearRegion, clauses: list[tuple[np.ndarray, np.ndarray]],
                  cone_rows: np.ndarray, domain: tuple[np.ndarray, np.ndarray], margin: float,
                  affine: bool = True, centre: np.ndarray | None = None) -> AffinePatch:
    """The minimal patch; ``clauses`` are violation clauses ``(A_k, b_k)`` (unsafe iff A_k y <= b_k).

    Tries the combinations of refuting rows (or a greedy choice) and keeps the smallest norm;
    retries without the cone constraints if they make every choice infeasible.
    """
    choices = [range(len(b)) for _, b in clauses]
    combos = list(itertools.islice(itertools.product(*choices), MAX_ROW_COMBINATIONS + 1))
    if len(combos) > MAX_ROW_COMBINATIONS:
        x0 = centre if centre is not None else (region.lower + region.upper) / 2
        y0 = region.W @ x0 + region.c
        combos = [tuple(int(np.argmax(A @ y0 - b)) for A, b in clauses)]
    for use_cone in (True, False):
        best: AffinePatch | None = None
        for combo in combos:
            rows = [(clauses[k][0][r], clauses[k][1][r]) for k, r in enumerate(combo)]
            try:
                patch = _solve(region, rows, cone_rows if use_cone else np.zeros((0, region.W.shape[0])),
                               domain, margin, affine)
            except PatchInfeasible:
                continue
            patch = AffinePatch(patch.C, patch.d, patch.norm, tuple(combo), use_cone)
            if best is None or patch.norm < best.norm:
                best = patch
        if best is not None:
            return best
    raise PatchInfeasible("no affine patch satisfies the property on this region")


def _solve(region: LinearRegion, rows: list[tuple[np.ndarray, float]], cone_rows: np.ndarray,
           domain: tuple[np.ndarray, np.ndarray], margin: float, affine: bool) -> AffinePatch:
    if not affine:
        return _solve_constant(region, rows, cone_rows, margin)
    A, b = region.A, region.b
    k, n = A.shape
    m = region.W.shape[0]
    lo, hi = domain
    n_C, n_d = m * n, m
    i_d, i_t = n_C, n_C + n_d
    n_base = i_t + 1
    # "for all x in P: u(z)·x + v(z) >= 0" blocks, with u = U z + u0, v = V z + v0.
    blocks: list[tuple[sp.csr_array, np.ndarray, np.ndarray, float]] = []
    for a, beta in rows:
        U = sp.lil_array((n, n_base))
        V = np.zeros(n_base)
        for o in range(m):
            if a[o] != 0:
                for j in range(n):
                    U[j, o * n + j] = a[o]
                V[i_d + o] = a[o]
        blocks.append((U.tocsr(), region.W.T @ a, V, float(a @ region.c - beta - margin)))
    for o in range(m):
        for s in (1.0, -1.0):
            U = sp.lil_array((n, n_base))
            for j in range(n):
                U[j, o * n + j] = -s
            V = np.zeros(n_base)
            V[i_t] = 1.0
            V[i_d + o] = -s
            blocks.append((U.tocsr(), np.zeros(n), V, 0.0))
    n_lambda = len(blocks) * k
    r = cone_rows.shape[0]
    n_mu = r * n
    n_vars = n_base + n_lambda + n_mu
    eq_rows, eq_rhs, ub_rows, ub_rhs = [], [], [], []
    for q, (U, u0, V, v0) in enumerate(blocks):
        first = n_base + q * k
        # Aᵀλ + U z = -u0
        lam_part = sp.csr_array((A.T.ravel(), (np.repeat(np.arange(n), k), np.tile(first + np.arange(k), n))), shape=(n, n_vars))
        z_part = sp.hstack([U, sp.csr_array((n, n_vars - n_base))]).tocsr()
        eq_rows.append(lam_part + z_part)
        eq_rhs.append(-u0)
        # -V z + bᵀλ <= v0
        row = np.zeros(n_vars)
        row[:n_base] = -V
        row[first:first + k] = b
        ub_rows.append(sp.csr_array(row[None, :]))
        ub_rhs.append(np.array([v0]))
    for ri in range(r):
        a = cone_rows[ri]
        first = n_base + n_lambda + ri * n
        for bound in (lo, hi):
            # μ_j - bound_j (Cᵀa)_j <= 0
            M = sp.lil_array((n, n_vars))
            for j in range(n):
                M[j, first + j] = 1.0
                for o in range(m):
                    if a[o] != 0:
                        M[j, o * n + j] = -bound[j] * a[o]
            ub_rows.append(M.tocsr())
            ub_rhs.append(np.zeros(n))
        row = np.zeros(n_vars)
        row[i_d:i_d + m] = -a
        row[first:first + n] = -1.0
        ub_rows.append(sp.csr_array(row[None, :]))
        ub_rhs.append(np.zeros(1))
    cost = np.zeros(n_vars)
    cost[i_t] = 1.0
    bounds = [(None, None)] * n_base + [(0, None)] * n_lambda + [(None, None)] * n_mu
    result = solve_lp(cost, sp.vstack(ub_rows), np.concatenate(ub_rhs), sp.vstack(eq_rows), np.concatenate(eq_rhs), bounds)
    if result.status != "optimal" or result.x is None:
        raise PatchInfeasible(f"patch LP {result.status}")
    z = result.x
    return AffinePatch(z[:n_C].reshape(m, n), z[i_d:i_d + m].copy(), float(z[i_t]), (), bool(r))


def _solve_constant(region: LinearRegion, rows: list[tuple[np.ndarray, float]], cone_rows: np.ndarray,
                    margin: float) -> AffinePatch:
    # a·d >= beta + margin - min_P a·(W x + c)
    needs = [(a, beta + margin - (_region_minimum(region, region.W.T @ a) + float(a @ region.c))) for a, beta in rows]
    return constant_patch(needs, cone_rows, region.W.shape[1])


def constant_patch(needs: list[tuple[np.ndarray, float]], cone_rows: np.ndarray, n_inputs: int,
                   sign: int = 0) -> AffinePatch:
    """The constant ``d`` of least ``||d||_inf`` with ``a·d >= need`` for every ``(a, need)`` and
    ``a_r·d >= 0`` for every cone row; ``sign`` +1 / -1 asks for ``d >= 0`` / ``d <= 0``."""
    m = len(needs[0][0]) if needs else cone_rows.shape[1]
    ub, rhs = [], []
    for a, need in needs:
        ub.append(np.concatenate([-a, [0.0]]))
        rhs.append(-need)
    for a in cone_rows:
        ub.append(np.concatenate([-a, [0.0]]))
        rhs.append(0.0)
    for o in range(m):
        for s in (1.0, -1.0):
            row = np.zeros(m + 1)
            row[o], row[m] = s, -1.0
            ub.append(row)
            rhs.append(0.0)
    cost = np.zeros(m + 1)
    cost[m] = 1.0
    entry = {0: (None, None), 1: (0.0, None), -1: (None, 0.0)}[sign]
    result = solve_lp(cost, np.array(ub), np.array(rhs), bounds=[entry] * m + [(None, None)])
    if result.status != "optimal" or result.x is None:
        raise PatchInfeasible(f"constant patch LP {result.status}")
    return AffinePatch(np.zeros((m, n_inputs)), result.x[:m].copy(), float(result.x[m]), (), bool(len(cone_rows)))


def patch_margin_on_region(region: LinearRegion, patch: AffinePatch, rows: list[tuple[np.ndarray, float]]) -> float:
    """Exact check by primal LPs: min over the region of ``a·(f + p) - β`` over the chosen rows."""
    worst = float("inf")
    for a, beta in rows:
        u = (region.W + patch.C).T @ a
        value = _region_minimum(region, u) + float(a @ (region.c + patch.d)) - beta
        worst = min(worst, value)
    return worst
