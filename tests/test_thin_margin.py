"""Thin margins: properties whose exact optimum lies 1e-12 … 1e-6 from the threshold, on both sides.

Each case is a random tiny ReLU network saved as ONNX (float32 weights, so the file's weights are
exact rationals), a box, and an objective ``c·y`` (one output, or the difference of two). z3
minimises it over the box in exact rational arithmetic (``Optimize`` over ``Real``, ReLU as
``If``), which gives the exact minimum ``m*`` and a point reaching it. The property is
``c·y > t`` (VNN-LIB asserts its violation ``c·y <= t``) with ``t`` a float64 a distance δ below or
above ``m*``, its side checked with `Fraction`.

Semantics, as docs/soundness.md states them:

- ``unsat`` is a claim about the network in *real* arithmetic on the *real* points of the box, so
  it is judged against the exact optimum: an ``unsat`` with ``t >= m*`` is a wrong answer.
- ``sat`` is judged as VNN-COMP judges it: the witness lies in the box as written and
  onnxruntime's float32 output on it (cast to float32) violates the property at zero tolerance.
  It is re-checked here in a fresh onnxruntime session. At these margins float32 evaluation and
  exact arithmetic disagree, so a witness may violate in onnxruntime but not in exact arithmetic
  (``t < m*``). That is the documented semantics, not a wrong answer: within float32's rounding of
  the output, ``unsat`` (real arithmetic) and ``sat`` (onnxruntime) can both be right.
- ``unknown`` and ``timeout`` are always allowed; a margin of 1e-6 is decided both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import z3
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from oracles import violation_in_onnxruntime
from random_nets import exact_weights, float32_rounded, random_mlp, save_onnx

import verirepair
from dense_chain import AffineLayer, Chain
from verirepair.bounds import BoundEngine
from verirepair.milp import MilpSettings, encode_graph, solver_named
from verirepair.spec import Box, Clause, parse_vnnlib
from verirepair.verify import VerifySettings

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DISTANCES = (1e-12, 1e-9, 1e-6)
MAGNITUDES = (1.0, 1e2, 1e5)  # of the outputs
VERIFY_TIMEOUT = 2.0
DECIDING_TIMEOUT = 30.0  # the 1e-6 cases take well under a second; this only spares a loaded machine


@dataclass(frozen=True)
class Problem:
    """A network file, its exact chain, a box (float64 bounds, exact as written) and ``c``."""

    path: Path
    chain: Chain
    lower: np.ndarray
    upper: np.ndarray
    c: tuple[float, ...]  # over the outputs: (1,) or (1, -1)


def _q(value: Fraction | float) -> z3.RatNumRef:
    f = Fraction(value)
    return z3.Q(f.numerator, f.denominator)


def _fraction(value: z3.ExprRef) -> Fraction:
    assert z3.is_rational_value(value), value
    return Fraction(value.numerator_as_long(), value.denominator_as_long())


def exact_forward(chain: Chain, x: list[Fraction]) -> tuple[list[list[Fraction]], list[Fraction]]:
    """The network stored in the file, in exact rational arithmetic: the input of every ReLU
    layer at ``x``, and the outputs."""
    h, pre = list(x), []
    for layer in exact_weights(chain):
        if isinstance(layer, str):
            assert layer == "relu"
            pre.append(h)
            h = [max(v, Fraction(0)) for v in h]
        else:
            W, b = layer
            h = [sum((w * v for w, v in zip(row, h)), c) for row, c in zip(W, b)]
    return pre, h


def exact_minimum(problem: Problem) -> tuple[Fraction, list[Fraction]]:
    """``min c·f(x)`` over the real points of the box, and a point reaching it (z3, exact)."""
    optimiser = z3.Optimize()
    h: list = [z3.Real(f"x{i}") for i in range(len(problem.lower))]
    for x, l, u in zip(h, problem.lower, problem.upper):
        optimiser.add(x >= _q(float(l)), x <= _q(float(u)))
    inputs = list(h)
    for k, layer in enumerate(exact_weights(problem.chain)):
        if isinstance(layer, str):
            fresh = [z3.Real(f"r{k}_{j}") for j in range(len(h))]
            optimiser.add(*[r == z3.If(v > 0, v, 0) for r, v in zip(fresh, h)])
        else:
            W, b = layer
            fresh = [z3.Real(f"z{k}_{i}") for i in range(len(b))]
            optimiser.add(*[z == z3.Sum([_q(w) * v for w, v in zip(row, h)]) + _q(c) for z, row, c in zip(fresh, W, b)])
        h = fresh
    objective = z3.Sum([_q(c) * y for c, y in zip(problem.c, h)])
    optimiser.minimize(objective)
    assert optimiser.check() == z3.sat
    model = optimiser.model()
    minimum = _fraction(model.eval(objective))
    point = [_fraction(model.eval(x, model_completion=True)) for x in inputs]
    # the oracle checks itself: the point is in the box and reaches the minimum in plain Fractions
    assert all(Fraction(float(l)) <= v <= Fraction(float(u)) for v, l, u in zip(point, problem.lower, problem.upper))
    reached = sum(Fraction(c) * y for c, y in zip(problem.c, exact_forward(problem.chain, point)[1]))
    assert reached == minimum, (reached, minimum)
    return minimum, point


def threshold(minimum: Fraction, distance: float, above: bool) -> float:
    """The float64 nearest to ``distance`` above (or below) ``minimum`` that is strictly on that
    side of it (one ulp further where ``distance`` is below half an ulp of ``minimum``)."""
    t = float(minimum + distance) if above else float(minimum - distance)
    while (Fraction(t) <= minimum) if above else (Fraction(t) >= minimum):
        t = float(np.nextafter(t, np.inf if above else -np.inf))
    return t


def vnnlib_text(problem: Problem, t: float) -> str:
    n_out = problem.chain.n_outputs
    lines = [f"(declare-const X_{i} Real)" for i in range(len(problem.lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (>= X_{i} {float(l)!r}))\n(assert (<= X_{i} {float(u)!r}))"
              for i, (l, u) in enumerate(zip(problem.lower, problem.upper))]
    objective = "Y_0" if len(problem.c) == 1 else "(- Y_0 Y_1)"
    return "\n".join(lines + [f"(assert (<= {objective} {t!r}))", ""])


def not_float32(rng: np.random.Generator) -> float:
    """A float64 in [-1, 1] that no float32 equals (like collins_rul_cnn's fixed inputs)."""
    while True:
        value = float(rng.uniform(-1.0, 1.0))
        if float(np.float32(value)) != value:
            return value


def between_float32_neighbours(rng: np.random.Generator) -> tuple[float, float]:
    """An interval of float64 numbers strictly between two adjacent float32 numbers: it holds none."""
    low32 = np.float32(rng.uniform(-1.0, 1.0))
    high32 = np.nextafter(low32, np.float32(np.inf))
    gap = float(high32) - float(low32)
    return float(low32) + 0.25 * gap, float(low32) + 0.75 * gap


def random_problem(seed: int, folder: Path, collins_style: bool, magnitude: float = 1.0) -> Problem:
    """2–3 inputs, one or two hidden layers of 3–6 ReLUs, one or two outputs, the last layer
    scaled by ``magnitude`` (so δ is that much smaller relative to the outputs and to their
    float64 rounding). With ``collins_style`` no bound of the box is a float32 number: each input
    is pinned at such a value, confined between two adjacent float32 numbers, or free with
    non-float32 ends."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 4))
    hidden = [int(h) for h in rng.integers(3, 7, size=int(rng.integers(1, 3)))]
    n_out = int(rng.integers(1, 3))
    chain = random_mlp(rng, n_in, hidden, n_out, "relu", scale=float(rng.uniform(1.0, 2.0)))
    last = chain.layers[-1]
    chain = Chain((*chain.layers[:-1], AffineLayer(last.weight * magnitude, last.bias * magnitude)))
    path = save_onnx(chain, folder / f"thin_{seed}.onnx")
    centre = rng.normal(scale=0.7, size=n_in)
    radius = rng.uniform(0.05, 1.0, size=n_in)
    lower, upper = centre - radius, centre + radius
    if collins_style:
        for i in range(n_in):
            kind = rng.integers(3) if i else 0  # the first input is always pinned
            if kind == 0:
                lower[i] = upper[i] = not_float32(rng)
            elif kind == 1:
                lower[i], upper[i] = between_float32_neighbours(rng)
            else:
                lower[i], upper[i] = not_float32(rng) - 1.0, not_float32(rng) + 1.0
        assert all(float(np.float32(v)) != v for v in (*lower, *upper))
    c = (1.0,) if n_out == 1 else (1.0, -1.0)
    return Problem(path, float32_rounded(chain), lower, upper, c)


@dataclass(frozen=True)
class Outcome:
    status: str
    exact_sat: bool  # t >= m*: some real point of the box violates in exact arithmetic
    witness_violates_exactly: bool | None  # for a sat: does the witness violate in exact arithmetic


def check_threshold(problem: Problem, minimum: Fraction, distance: float, above: bool, folder: Path,
                    timeout: float = VERIFY_TIMEOUT) -> Outcome:
    """Verify ``c·y > t`` for ``t`` beside ``minimum``; fail on an answer the semantics forbid."""
    t = threshold(minimum, distance, above)
    spec_path = folder / f"{problem.path.stem}_{'above' if above else 'below'}_{distance:g}.vnnlib"
    spec_path.write_text(vnnlib_text(problem, t))
    spec = parse_vnnlib(spec_path)
    ((clause,),) = [region.clauses for region in spec.regions]
    assert clause.b.tolist() == [t] and clause.A.tolist() == [list(problem.c)]  # parsed exactly as meant
    verdict = verirepair.verify(problem.path, spec_path, timeout=timeout)
    where = f"{problem.path.name}, m* = {float(minimum)!r}, t = {t!r} ({'above' if above else 'below'} by {distance:g})"
    if verdict.status == "unsat":
        assert not above, f"WRONG unsat: {where}; the exact minimum reaches the threshold"
    violates_exactly = None
    if verdict.status == "sat":
        assert verdict.counterexample is not None
        x = verdict.counterexample.x
        assert violation_in_onnxruntime(problem.path, spec, x), f"sat witness not confirmed by onnxruntime: {where}"
        _, y = exact_forward(problem.chain, [Fraction(float(v)) for v in x])
        violates_exactly = sum(Fraction(c) * v for c, v in zip(problem.c, y)) <= Fraction(t)
        if above is False:
            assert not violates_exactly  # the exact minimum is above t: no real point violates
    return Outcome(verdict.status, above, violates_exactly)


@settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**20), distance=st.sampled_from(DISTANCES), collins_style=st.booleans(),
       magnitude=st.sampled_from(MAGNITUDES))
def test_verifier_never_contradicts_the_exact_optimum(seed: int, distance: float, collins_style: bool,
                                                      magnitude: float, tmp_path: Path) -> None:
    """Both sides of the threshold: no ``unsat`` where a real point violates, every ``sat``
    confirmed by onnxruntime."""
    problem = random_problem(seed, tmp_path, collins_style, magnitude)
    minimum, _ = exact_minimum(problem)
    for above in (False, True):
        check_threshold(problem, minimum, distance, above, tmp_path)


@pytest.mark.parametrize("collins_style", [False, True])
@pytest.mark.parametrize("seed", [101, 202, 303])
def test_a_margin_of_a_millionth_is_decided_both_ways(seed: int, collins_style: bool, tmp_path: Path) -> None:
    """1e-6 clears the verifier's decision margin (1e-9) and float32's rounding of these outputs:
    below the minimum the property is proven, above it a witness violates in exact arithmetic too."""
    problem = random_problem(seed, tmp_path, collins_style)
    minimum, _ = exact_minimum(problem)
    below = check_threshold(problem, minimum, 1e-6, False, tmp_path, DECIDING_TIMEOUT)
    above = check_threshold(problem, minimum, 1e-6, True, tmp_path, DECIDING_TIMEOUT)
    assert below.status == "unsat", below
    assert above.status == "sat" and above.witness_violates_exactly, above


# Boxes on which a MILP solver called a feasible model infeasible while clause rows were relaxed
# by an absolute 1e-6: (solver, seed, magnitude, collins_style, the box, or None for the problem's
# whole box). Each box holds the exact minimiser and is one that input split handed to its leaf MILP
# in a run that then answered `unsat`.
WRONG_INFEASIBLE = [
    ("gurobi", 5, 1e5, True, None),
    ("highs", 25, 1e5, True, ([-0.9409054705942905, 0.5247475647285367, 0.1683524353429675],
                              [-0.9409054705942905, 0.5247475647285367, 0.16835243627429008])),
]


@pytest.mark.parametrize("solver, seed, magnitude, collins_style, leaf", WRONG_INFEASIBLE,
                         ids=[f"{case[0]}-seed{case[1]}" for case in WRONG_INFEASIBLE])
def test_a_leaf_milp_never_calls_a_model_with_a_real_violation_infeasible(
        solver: str, seed: int, magnitude: float, collins_style: bool, leaf: tuple | None, tmp_path: Path) -> None:
    """The clause ``c·y <= t`` with ``t = m* + 3e-7``, relaxed by `VerifySettings.milp_margin` as
    the verifier relaxes it, over a box that holds the exact minimiser, with sound pre-activation
    bounds (CROWN on that box, checked against the minimiser's exact pre-activations): a model with
    a feasible point, which "infeasible" contradicts. Preconditions fail with `pytest.fail`, so only
    the solver's answer can make this an expected failure."""
    if solver == "gurobi":
        pytest.importorskip("gurobipy")
    problem = random_problem(seed, tmp_path, collins_style, magnitude)
    minimum, point = exact_minimum(problem)
    box = Box(problem.lower, problem.upper) if leaf is None else Box(np.array(leaf[0]), np.array(leaf[1]))
    if not all(Fraction(float(l)) <= v <= Fraction(float(u)) for v, l, u in zip(point, box.lower, box.upper)):
        pytest.fail("the exact minimiser is not in the box")
    t = threshold(minimum, 3e-7, True)
    layers = BoundEngine(problem.chain.graph).layer_bounds(torch.tensor(box.lower)[None], torch.tensor(box.upper)[None],
                                                     "crown")
    pre_bounds = [(l[0].numpy(), u[0].numpy()) for l, u in layers.pre_activation]
    for (lower, upper), exact in zip(pre_bounds, exact_forward(problem.chain, point)[0]):
        if not all(Fraction(float(l)) <= v <= Fraction(float(u)) for v, l, u in zip(exact, lower, upper)):
            pytest.fail("the pre-activation bounds cut off the exact minimiser")
    model, _, _ = encode_graph(problem.chain.graph, box, pre_bounds, Clause(np.array([problem.c]), np.array([t])),
                               margin=VerifySettings().milp_margin)
    result = solver_named(solver).solve(model, 30.0, MilpSettings())
    assert result.status != "infeasible", (
        f"{solver}: infeasible, but the exact minimiser reaches {float(minimum)!r} <= t = {t!r}")


def test_no_wrong_unsat_at_large_output_magnitudes(tmp_path: Path) -> None:
    """``Y_0 <= m* + 3e-7`` over a 2-input box whose corner x* reaches m* = -688554.956...: x* is
    a VNN-COMP witness too (onnxruntime gives -688555.0 on it cast to float32). The verifier
    answers `unsat` once input split has handed x*'s leaf to the MILP."""
    problem = random_problem(11, tmp_path, False, 1e5)
    minimum, point = exact_minimum(problem)
    t = threshold(minimum, 3e-7, True)
    x = np.array([float(v) for v in point])
    spec_path = tmp_path / "witness.vnnlib"
    spec_path.write_text(vnnlib_text(problem, t))
    if not violation_in_onnxruntime(problem.path, parse_vnnlib(spec_path), x):
        pytest.fail("the exact minimiser is no onnxruntime witness")
    check_threshold(problem, minimum, 3e-7, True, tmp_path, timeout=60.0)
