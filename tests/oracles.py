"""Exact oracles shared by the verifier tests: an exact MILP optimum, z3 over the rationals, and the
VNN-COMP witness check in a fresh onnxruntime session.

Each reasons about the network stored in the file (`random_nets.float32_rounded`) and about the
box as the set of real numbers the spec writes, never about its float32 rounding.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort
import z3
from random_nets import exact_weights, interval_pre_bounds

from dense_chain import Chain
from verirepair.milp import HighsSolver, MilpSettings, encode_graph
from verirepair.spec import Box, Spec

ORACLE_TIME_LIMIT_S = 60.0


def milp_min_margin(chain: Chain, box: Box, A: np.ndarray, b: np.ndarray) -> float:
    """Exact ``min over the box of max_r (A_r·f(x) - b_r)`` for a ReLU chain (HiGHS, tight gaps)."""
    model, _, outputs = encode_graph(chain.graph, box, interval_pre_bounds(chain, box, slack=1e-6), None, 0.0)
    (t,) = model.add_variables([-1e6], [1e6], name="t")
    coefficients = np.hstack([A, -np.ones((A.shape[0], 1))])
    model.add_rows(coefficients, np.concatenate([outputs, [t]]), -np.inf, b)
    model.set_objective([t], [1.0])
    result = HighsSolver().solve(model, ORACLE_TIME_LIMIT_S, MilpSettings())
    assert result.status == "optimal" and result.objective is not None, result.note
    return float(result.objective)


def _q(value: Fraction | float) -> z3.RatNumRef:
    f = Fraction(value)
    return z3.Q(f.numerator, f.denominator)


def z3_violation_exists(chain: Chain, box: Box, A: np.ndarray, b: np.ndarray) -> bool:
    """Whether some x of ``box`` has ``A·f(x) <= b``, decided by z3 in exact rational arithmetic.

    Exact interval bounds (in `Fraction`s) fix the stable ReLUs and bound the unstable ones, with
    the implied triangle constraints: a sound simplification that spares z3 most case splits."""
    solver = z3.Then("simplify", "propagate-values", "solve-eqs", "elim-term-ite", "smt").solver()
    solver.set("timeout", int(ORACLE_TIME_LIMIT_S * 1000))
    h: list = [z3.Real(f"x{i}") for i in range(box.dim)]
    low = [Fraction(float(v)) for v in box.lower]
    high = [Fraction(float(v)) for v in box.upper]
    for x, l, u in zip(h, low, high):
        solver.add(x >= _q(l), x <= _q(u))
    for k, layer in enumerate(exact_weights(chain)):
        if isinstance(layer, str):
            assert layer == "relu"
            fresh = []
            for j, (v, l, u) in enumerate(zip(h, low, high)):
                if l >= 0:
                    fresh.append(v)
                elif u <= 0:
                    fresh.append(z3.RealVal(0))
                else:
                    r = z3.Real(f"r{k}_{j}")
                    # the If is the definition; the rest are implied by it and the exact bounds
                    # (triangle relaxation) and only let z3 prune case splits early
                    solver.add(r == z3.If(v > 0, v, 0), v >= _q(l), v <= _q(u), r >= 0, r >= v,
                               r * _q(u - l) <= _q(u) * (v - _q(l)))
                    fresh.append(r)
            h = fresh
            low, high = [max(l, Fraction(0)) for l in low], [max(u, Fraction(0)) for u in high]
        else:
            W, bias = layer
            fresh = [z3.Real(f"z{k}_{i}") for i in range(len(bias))]
            solver.add(*[z == z3.Sum([_q(w) * v for w, v in zip(row, h)]) + _q(c)
                         for z, row, c in zip(fresh, W, bias)])
            low, high = ([c + sum(w * (l if w > 0 else u) for w, l, u in zip(row, low, high)) for row, c in zip(W, bias)],
                         [c + sum(w * (u if w > 0 else l) for w, l, u in zip(row, low, high)) for row, c in zip(W, bias)])
            h = fresh
    for row, bound in zip(A, b):
        solver.add(z3.Sum([_q(float(a)) * y for a, y in zip(row, h)]) <= _q(float(bound)))
    answer = solver.check()
    assert answer != z3.unknown, f"z3 gave up: {solver.reason_unknown()}"
    return answer == z3.sat


def violation_in_onnxruntime(path: Path, spec: Spec, x: np.ndarray) -> bool:
    """VNN-COMP's check at zero tolerance, in a fresh onnxruntime session (not the verifier's): ``x``
    as written lies in a box of the spec, and the output on ``x`` cast to float32 violates it."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x.astype(np.float32).reshape(1, -1)})[0].astype(np.float64)
    return spec.violation_at(x, y[0])
