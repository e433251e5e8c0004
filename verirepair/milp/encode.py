"""Exact MILP encoding of a piecewise-linear `BoundGraph` over an input box.

Every node is encoded exactly (no relaxation) given sound bounds on the input of each non-linear
node: linear nodes as equalities (sparse rows: a convolution's rows have its kernel's non-zeros;
a reshape or slice reuses its operand's variables), unstable ReLUs with the big-M formulation and
one binary each, max-pool windows with one binary per input that can still be the maximum. Stable
neurons and decided windows add no binary at all. Meant for small networks: every linear node's
matrix is made dense once (`LinearOperator.matrices`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from verirepair.bounds import BoundGraph, BoundMaxPool, BoundRelu, LinearOperator
from verirepair.errors import UnsupportedError
from verirepair.milp.model import IndexArray, MilpModel
from verirepair.spec.model import Box, Clause

# Interval arithmetic in float64 can round a bound inward by a few ulps. A variable bound that cuts
# off a reachable value would make the MILP unsound, so interval bounds are widened by this much
# (relative, plus the same absolute amount): far above float64 rounding of any sane layer, far
# below anything that changes a verdict.
INTERVAL_WIDENING = 1e-9

BoundPair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Vector:
    """The current activation vector: its model variables and their (sound) bounds."""

    indices: IndexArray
    lower: np.ndarray
    upper: np.ndarray


def encode_graph(graph: BoundGraph, box: Box, pre_bounds: list[BoundPair], clause: Clause | None,
                 margin: float, objective_rows: np.ndarray | None = None, stop_at: int | None = None,
                 ) -> tuple[MilpModel, IndexArray, IndexArray]:
    """Encode ``graph`` over ``box`` (and, if given, the violation ``clause``) as a MILP.

    ``pre_bounds`` holds one sound ``(lower, upper)`` pair for the *input* of each non-linear node,
    in `BoundGraph.nonlinear` order (with ``stop_at``, those before it). The clause is encoded as
    ``A_r·y <= b_r + margin·(1 + reach_r)`` per row r, where
    ``reach_r = |A_r|·max(|y_lower|, |y_upper|) + |b_r|`` is the largest magnitude the row's terms
    take on the model's output bounds: a solver answers "infeasible" only up to tolerances that act
    on every row of the encoding and grow with the magnitudes involved (HiGHS and Gurobi both called
    models infeasible whose exact minimiser met a row with 1.3e-6 to spare, on outputs of size 1e5),
    so a violation region thinner than that could be missed. Relaxing each row by ``margin`` relative
    to its magnitude makes an "infeasible" verdict on the relaxed model imply infeasibility of the
    exact one. It can only add spurious feasible points, and every counterexample is replayed on the
    real network before anyone believes it.

    ``objective_rows`` (a vector c of length n_outputs) makes the objective "minimise c·y"; without it
    the model is a pure feasibility problem (objective 0). To minimise several functions, call
    ``model.set_objective(output_indices, c)`` on the returned model between solves.
    ``stop_at`` (the position of a non-linear node in `BoundGraph.nonlinear`): encode only what
    that node's input depends on, and return that input as the outputs (no clause then).

    Returns the model and the variable indices of the inputs and of the outputs.
    """
    last = graph.nonlinear[stop_at] if stop_at is not None else None
    target = graph.nodes[last].inputs[0] if last is not None else graph.output
    needed = graph.ancestors(target)
    n_bounds = len(graph.nonlinear) if stop_at is None else stop_at
    _check_arguments(graph, box, pre_bounds, n_bounds, clause, margin, objective_rows)
    bound_of = dict(zip(graph.nonlinear, pre_bounds))
    model = MilpModel()
    lower = np.asarray(box.lower, dtype=np.float64)
    upper = np.asarray(box.upper, dtype=np.float64)
    inputs = model.add_variables(lower, upper, name="x")
    vectors = {graph.input: _Vector(inputs, lower.copy(), upper.copy())}
    for k, node in enumerate(graph.nodes):
        if k not in needed:
            continue
        if isinstance(node.op, LinearOperator):
            vectors[node.output] = _encode_linear(model, node.op, [vectors[v] for v in node.inputs], k)
            continue
        current = _tightened(model, vectors[node.inputs[0]], bound_of[k])
        if isinstance(node.op, BoundMaxPool):
            vectors[node.output] = _encode_maxpool(model, node.op, current, k)
        else:
            vectors[node.output] = _encode_relu(model, current, k)
    current = vectors[target]
    outputs = current.indices
    if clause is not None:
        A = np.asarray(clause.A, dtype=np.float64)
        b = np.asarray(clause.b, dtype=np.float64).reshape(-1)
        model.add_rows(A, outputs, -np.inf, b + clause_relaxation(A, b, current.lower, current.upper, margin))
    if objective_rows is not None:
        model.set_objective(outputs, np.asarray(objective_rows, dtype=np.float64).reshape(-1))
    return model, inputs, outputs


def clause_relaxation(A: np.ndarray, b: np.ndarray, y_lower: np.ndarray, y_upper: np.ndarray,
                      margin: float) -> np.ndarray:
    """How much each clause row ``A_r·y <= b_r`` is relaxed: ``margin·(1 + reach_r)``, with
    ``reach_r = |A_r|·max(|y_lower|, |y_upper|) + |b_r|`` (see `encode_graph`); zero for a zero margin."""
    if margin == 0.0:
        return np.zeros(A.shape[0])
    reach = np.abs(A) @ np.maximum(np.abs(y_lower), np.abs(y_upper)) + np.abs(b)
    return margin * (1.0 + reach)


def _check_arguments(graph: BoundGraph, box: Box, pre_bounds: list[BoundPair], n_bounds: int, clause: Clause | None,
                     margin: float, objective_rows: np.ndarray | None) -> None:
    if not graph.is_piecewise_linear:
        kind = next(getattr(node.op, "kind", type(node.op).__name__) for node in graph.nodes
                    if not isinstance(node.op, (LinearOperator, BoundRelu, BoundMaxPool)))
        raise UnsupportedError(None, None, f"MILP encoding needs a piecewise-linear network (found {kind})")
    if len(pre_bounds) != n_bounds:
        raise ValueError(f"pre_bounds has {len(pre_bounds)} entries, the graph has {n_bounds} non-linear nodes")
    if box.dim != graph.n_inputs:
        raise ValueError(f"box has {box.dim} inputs, the graph has {graph.n_inputs}")
    if not (np.all(np.isfinite(box.lower)) and np.all(np.isfinite(box.upper))):
        raise ValueError("MILP encoding needs a bounded input box")
    for k, (lo, hi) in enumerate(pre_bounds):
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"pre_bounds[{k}] must be finite (big-M constants come from them)")
    if not (np.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if clause is not None and np.asarray(clause.A).shape[-1] != graph.n_outputs:
        raise ValueError(f"clause has {np.asarray(clause.A).shape[-1]} columns, "
                         f"the graph has {graph.n_outputs} outputs")
    if objective_rows is not None and np.asarray(objective_rows).size != graph.n_outputs:
        raise ValueError(f"objective_rows has {np.asarray(objective_rows).size} entries, "
                         f"the graph has {graph.n_outputs} outputs")


def _tightened(model: MilpModel, current: _Vector, bounds: BoundPair) -> _Vector:
    """Intersect the current bounds with the given sound pre-bounds (in the model too)."""
    lo = np.asarray(bounds[0], dtype=np.float64).reshape(-1)
    hi = np.asarray(bounds[1], dtype=np.float64).reshape(-1)
    if lo.size != current.indices.size or hi.size != current.indices.size:
        raise ValueError(f"pre-bounds have {lo.size}/{hi.size} entries, layer input has "
                         f"{current.indices.size}")
    model.tighten_bounds(current.indices, lo, hi)
    new_lo = np.maximum(current.lower, lo)
    new_hi = np.minimum(current.upper, hi)
    empty = new_lo > new_hi  # only float rounding can do this (see MilpModel.tighten_bounds)
    new_lo[empty], new_hi[empty] = lo[empty], hi[empty]
    return _Vector(current.indices, new_lo, new_hi)


def _encode_linear(model: MilpModel, op: LinearOperator, operands: list[_Vector], k: int) -> _Vector:
    """``z = Σ_i A_i x_i + b`` as equalities; z bounded by interval arithmetic. A node that only
    selects operand entries (reshape, slice, flatten) reuses their variables."""
    matrices = [_scipy(m) for m in op.matrices()]
    n_out = matrices[0].shape[0]
    b = op.bias.detach().cpu().double().numpy().reshape(-1) if op.has_bias else np.zeros(n_out)
    if len(operands) == 1:
        selected = _selection(matrices[0], b)
        if selected is not None:
            source = operands[0]
            return _Vector(source.indices[selected], source.lower[selected], source.upper[selected])
    mid, spread = b.copy(), np.zeros(n_out)
    for W, x in zip(matrices, operands):
        mid += W @ ((x.lower + x.upper) / 2.0)
        spread += abs(W) @ ((x.upper - x.lower) / 2.0)
    slack = INTERVAL_WIDENING * (1.0 + np.abs(mid) + spread)
    lower, upper = mid - spread - slack, mid + spread + slack
    z = model.add_variables(lower, upper, name=f"z{k}")
    rows, cols, vals = [np.arange(n_out)], [z], [-np.ones(n_out)]
    for W, x in zip(matrices, operands):
        rows.append(W.row)
        cols.append(x.indices[W.col])
        vals.append(W.data)
    model.add_rows_coo(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), -b, -b)
    return _Vector(z, lower, upper)


def _scipy(matrix: torch.Tensor) -> scipy.sparse.coo_matrix:
    matrix = matrix.detach().cpu().double().coalesce()
    rows, cols = matrix.indices().numpy()
    values = matrix.values().numpy()
    keep = values != 0
    return scipy.sparse.coo_matrix((values[keep], (rows[keep], cols[keep])), shape=tuple(matrix.shape))


def _selection(W: scipy.sparse.coo_matrix, b: np.ndarray) -> np.ndarray | None:
    """The operand index each output copies, if every row of ``W`` is one 1 and ``b`` is zero."""
    if np.any(b != 0) or np.any(W.data != 1):
        return None
    if not np.array_equal(np.sort(W.row), np.arange(W.shape[0])):
        return None
    selected = np.empty(W.shape[0], dtype=np.int64)
    selected[W.row] = W.col
    return selected


def _encode_relu(model: MilpModel, current: _Vector, k: int) -> _Vector:
    """``y = max(z, 0)``: y = z when l >= 0, y = 0 when u <= 0, else big-M with binary δ
    (δ = 1 means active): y >= 0, y >= z, y <= u·δ, y <= z - l·(1 - δ)."""
    z, l, u = current.indices, current.lower, current.upper
    active = l >= 0.0
    unstable = ~active & (u > 0.0)
    out = z.copy()  # active neurons reuse their pre-activation variable
    not_active = ~active
    out[not_active] = model.add_variables(np.zeros(not_active.sum()),
                                          np.where(unstable, u, 0.0)[not_active], name=f"y{k}")
    n = int(unstable.sum())
    if n:
        zi, yi, li, ui = z[unstable], out[unstable], l[unstable], u[unstable]
        delta = model.add_binaries(n, name=f"relu{k}")
        r = np.arange(n)
        one = np.ones(n)
        # block 0: y - z >= 0;  block 1: y - u·δ <= 0;  block 2: y - z - l·δ <= -l
        rows = np.concatenate([r, r, n + r, n + r, 2 * n + r, 2 * n + r, 2 * n + r])
        cols = np.concatenate([yi, zi, yi, delta, yi, zi, delta])
        vals = np.concatenate([one, -one, one, -ui, one, -one, -li])
        row_lower = np.concatenate([np.zeros(n), np.full(2 * n, -np.inf)])
        row_upper = np.concatenate([np.full(n, np.inf), np.zeros(n), -li])
        model.add_rows_coo(rows, cols, vals, row_lower, row_upper)
    return _Vector(out, np.maximum(l, 0.0), np.maximum(u, 0.0))


def _encode_maxpool(model: MilpModel, layer: BoundMaxPool, current: _Vector, k: int) -> _Vector:
    """``y_i = max_j x_j`` over window i.

    Only *candidates* can be the maximum: the input with the largest lower bound L, and any input
    whose upper bound exceeds L (the others are <= L <= y already; a repeated index counts once).
    One candidate: y is that input (shortcut, no binary). Otherwise, per candidate j: y >= x_j and y <= x_j + (U - l_j)(1 - δ_j),
    with Σ_j δ_j = 1 and U the largest upper bound in the window.
    """
    windows = layer.windows.detach().cpu().numpy().astype(np.int64)
    if windows.ndim != 2 or windows.shape[1] == 0:
        raise ValueError("max-pool windows must be a non-empty [out, k] index array")
    lw, uw = current.lower[windows], current.upper[windows]
    n_out = windows.shape[0]
    lower, upper = lw.max(axis=1), uw.max(axis=1)
    first = np.argmax(lw, axis=1)
    candidate = (uw > lower[:, None]) & ~_repeated(windows)
    candidate[np.arange(n_out), first] = True  # argmax is a first occurrence, never a repeat
    decided = candidate.sum(axis=1) == 1
    out = np.empty(n_out, dtype=np.int64)
    out[decided] = current.indices[windows[decided, first[decided]]]
    open_windows = np.flatnonzero(~decided)
    if open_windows.size:
        y = model.add_variables(lower[open_windows], upper[open_windows], name=f"pool{k}")
        out[open_windows] = y
        local = np.full(n_out, -1, dtype=np.int64)
        local[open_windows] = np.arange(open_windows.size)
        win, pos = np.nonzero(candidate & ~decided[:, None])  # one entry per (window, candidate)
        m = win.size
        yj = y[local[win]]
        xj = current.indices[windows[win, pos]]
        big = upper[win] - lw[win, pos]
        delta = model.add_binaries(m, name=f"pool{k}_delta")
        r = np.arange(m)
        one = np.ones(m)
        # block 0: y - x_j >= 0;  block 1: y - x_j + big·δ_j <= big;  block 2: Σ_j δ_j = 1
        rows = np.concatenate([r, r, m + r, m + r, m + r, 2 * m + local[win]])
        cols = np.concatenate([yj, xj, yj, xj, delta, delta])
        vals = np.concatenate([one, -one, one, -one, big, one])
        n_win = open_windows.size
        row_lower = np.concatenate([np.zeros(m), np.full(m, -np.inf), np.ones(n_win)])
        row_upper = np.concatenate([np.full(m, np.inf), big, np.ones(n_win)])
        model.add_rows_coo(rows, cols, vals, row_lower, row_upper)
    return _Vector(out, lower, upper)


def _repeated(windows: np.ndarray) -> np.ndarray:
    """Mask of window entries that repeat an earlier entry of the same window (e.g. padding)."""
    repeated = np.zeros(windows.shape, dtype=bool)
    for p in range(1, windows.shape[1]):  # loops over the window size only, not the windows
        repeated[:, p] = np.any(windows[:, :p] == windows[:, p:p + 1], axis=1)
    return repeated
