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
import z3
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from oracles import violation_in_onnxruntime
from random_nets import exact_weights, float32_rounded, random_mlp, save_onnx

import verirepair
from verirepair.bounds import Chain
from verirepair.spec import parse_vnnlib

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DISTANCES = (1e-12, 1e-9, 1e-6)
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


def exact_outputs(chain: Chain, x: list[Fraction]) -> list[Fraction]:
    """The network stored in the file, in exact rational arithmetic."""
    h = list(x)
    for layer in exact_weights(chain):
        if isinstance(layer, str):
            assert layer == "relu"
            h = [max(v, Fraction(0)) for v in h]
        else:
            W, b = layer
            h = [sum((w * v for w, v in zip(row, h)), c) for row, c in zip(W, b)]
    return h


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
    reached = sum(Fraction(c) * y for c, y in zip(problem.c, exact_outputs(problem.chain, point)))
    assert reached == minimum, (reached, minimum)
    return minimum, point


def threshold(minimum: Fraction, distance: float, above: bool) -> float:
    """A float64 about ``distance`` above (or below) ``minimum``, strictly on that side of it."""
    t = float(minimum + distance) if above else float(minimum - distance)
    assert (Fraction(t) > minimum) if above else (Fraction(t) < minimum), (t, minimum)
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


def random_problem(seed: int, folder: Path, collins_style: bool) -> Problem:
    """2–3 inputs, one or two hidden layers of 3–6 ReLUs, one or two outputs. With
    ``collins_style`` no bound of the box is a float32 number: each input is pinned at such a
    value, confined between two adjacent float32 numbers, or free with non-float32 ends."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 4))
    hidden = [int(h) for h in rng.integers(3, 7, size=int(rng.integers(1, 3)))]
    n_out = int(rng.integers(1, 3))
    chain = random_mlp(rng, n_in, hidden, n_out, "relu", scale=float(rng.uniform(1.0, 2.0)))
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
        y = exact_outputs(problem.chain, [Fraction(float(v)) for v in x])
        violates_exactly = sum(Fraction(c) * v for c, v in zip(problem.c, y)) <= Fraction(t)
        if above is False:
            assert not violates_exactly  # the exact minimum is above t: no real point violates
    return Outcome(verdict.status, above, violates_exactly)


@settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**20), distance=st.sampled_from(DISTANCES), collins_style=st.booleans())
def test_verifier_never_contradicts_the_exact_optimum(seed: int, distance: float, collins_style: bool,
                                                      tmp_path: Path) -> None:
    """Both sides of the threshold: no ``unsat`` where a real point violates, every ``sat``
    confirmed by onnxruntime."""
    problem = random_problem(seed, tmp_path, collins_style)
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
