"""A VNN-LIB box is a set of real numbers, not of float32 numbers.

`unsat` must mean that no real point of the box violates the property, and a `sat` witness follows
VNN-COMP's check at zero tolerance: X as written lies in the box, onnxruntime's output on X cast to
float32 violates the property. The boxes here are built so that float32 rounding matters: most
coordinates are fixed (lo = hi) at values that are not float32 numbers, some intervals are so narrow
that they hold no float32 number at all, and the networks carry weights below the 1e-9 that HiGHS
drops from a constraint matrix (collins_rul_cnn's fc_1 has float32 weights down to 6e-39). The
properties are violated at every point of the box, at none, or at some; the answer is checked
against exact oracles (z3 over the rationals on the real box, and the exact MILP optimum), and
every witness is replayed in a fresh onnxruntime session.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from oracles import milp_min_margin, violation_in_onnxruntime, z3_violation_exists
from random_nets import float32_rounded, interval_pre_bounds, random_mlp, save_onnx

from verirepair.bench import check_witness
from dense_chain import ActivationLayer, AffineLayer, Chain
from verirepair.milp import HighsSolver, MilpModel, MilpSettings, encode_graph
from verirepair.network import load_network
from verirepair.spec import Box, Clause, Region, Spec, parse_vnnlib
from verirepair.verify import VerifySettings, format_witness, representable_bounds, verify, witness_point

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SETTINGS = VerifySettings(timeout=20, random_samples=200, pgd_restarts=8, pgd_steps=20)
KINDS = ("everywhere", "nowhere", "somewhere")
CASES_PER_KIND = 8
Z3_MAX_HIDDEN = 12


def between_float32(rng: np.random.Generator, size: int, scale: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate, the two float32 neighbours ``a < c`` (as float64) of a random value."""
    a = rng.normal(scale=scale, size=size).astype(np.float32)
    c = np.nextafter(a, np.float32(np.inf))
    return a.astype(np.float64), c.astype(np.float64)


def real_box(rng: np.random.Generator, n: int) -> Box:
    """Coordinates of three kinds, none with a float32 bound: fixed at a value strictly between two
    float32 numbers; an interval strictly between two float32 numbers (no float32 number inside);
    and, for at most two coordinates, an ordinary interval with non-float32 ends."""
    a, c = between_float32(rng, n)
    lower, upper = a + 0.3 * (c - a), a + 0.7 * (c - a)
    fixed = rng.random(n) < 0.6
    upper[fixed] = lower[fixed]
    wide = rng.choice(n, size=min(2, n), replace=False)
    radius = rng.uniform(0.05, 0.5, size=wide.size)
    lower[wide] -= radius
    upper[wide] += radius
    assert np.all(lower.astype(np.float32).astype(np.float64) != lower)
    return Box(lower, upper)


def with_tiny_weights(chain: Chain, rng: np.random.Generator, share: float = 0.2, largest: float = -9.05) -> Chain:
    """A ``share`` of every weight matrix set to magnitudes from 1e-38 to ``10**largest`` (below
    HiGHS's 1e-9; float32 keeps them all)."""
    layers = []
    for layer in chain.layers:
        if isinstance(layer, AffineLayer):
            weight = layer.weight.clone()
            shape = tuple(weight.shape)
            mask = torch.tensor(rng.random(shape) < share)
            tiny = torch.tensor(10.0 ** rng.uniform(-38, largest, size=shape) * rng.choice([-1, 1], size=shape))
            layer = AffineLayer(torch.where(mask, tiny, weight), layer.bias)
        layers.append(layer)
    return Chain(tuple(layers))


def clause_for(kind: str, rng: np.random.Generator, exact: Chain, box: Box, n_out: int) -> tuple[Clause, float, float]:
    """One single-row clause ``a·y <= b`` and the exact extremes of ``a·y - b`` over the box.

    everywhere: ``max a·y < b``, so every point violates; nowhere: ``min a·y > b``; somewhere: ``b``
    strictly inside ``(min, max)``. Each is kept a relative 1e-4 of the output scale from its edge,
    so float32 inference cannot flip what the exact oracle says."""
    a = rng.normal(size=(1, n_out))
    low = milp_min_margin(exact, box, a, np.zeros(1))
    high = -milp_min_margin(exact, box, -a, np.zeros(1))
    gap = 1e-4 * (1.0 + max(abs(low), abs(high)))
    if kind == "everywhere":
        b = high + gap * 10.0 ** rng.uniform(0, 2)
    elif kind == "nowhere":
        b = low - gap * 10.0 ** rng.uniform(0, 2)
    else:
        if high - low < 4 * gap:
            b = low - gap  # the box is too thin for "somewhere": nowhere instead
        else:
            b = low + rng.uniform(0.25, 0.75) * (high - low)
    return Clause(a, np.array([b])), low - b, high - b


def real_box_case(seed: int, kind: str, n_in: int, tmp_path: Path) -> tuple[Path, Chain, Spec, float]:
    """A network file, its exact chain, a one-region spec, and the exact ``min (a·y - b)`` (< 0: sat)."""
    rng = np.random.default_rng(seed)
    hidden = [int(h) for h in rng.integers(3, 9, size=int(rng.integers(1, 3)))]
    n_out = int(rng.integers(1, 4))
    chain = with_tiny_weights(random_mlp(rng, n_in, hidden, n_out, "relu", scale=float(rng.uniform(1.0, 2.5))), rng)
    path = save_onnx(chain, tmp_path / f"real_box_{kind}_{seed}.onnx")
    exact = float32_rounded(chain)
    box = real_box(rng, n_in)
    clause, lowest, _ = clause_for(kind, rng, exact, box, n_out)
    spec = Spec(n_in, n_out, (Region(box, (clause,)),), source=f"{kind} seed {seed}")
    return path, exact, spec, lowest


@pytest.mark.parametrize("n_in", [3, 12])
@pytest.mark.parametrize("kind", KINDS)
def test_boxes_without_float32_points_agree_with_exact_oracles(kind: str, n_in: int, tmp_path: Path) -> None:
    """3 inputs go to input split, 12 to ReLU split and the MILP search; never a wrong answer, every
    case decided, every witness in the box as written and confirmed by onnxruntime on its cast."""
    failures, answers = [], []
    for seed in range(CASES_PER_KIND):
        path, exact, spec, lowest = real_box_case(1000 * n_in + seed, kind, n_in, tmp_path)
        expected = "sat" if lowest < 0 else "unsat"
        (region,) = spec.regions
        hidden = sum(layer.size for layer in exact.layers if isinstance(layer, ActivationLayer))
        if hidden <= Z3_MAX_HIDDEN:  # the MILP extremes checked exactly, on the real box
            (clause,) = region.clauses
            assert z3_violation_exists(exact, region.box, clause.A, clause.b) == (expected == "sat"), spec.source
        settings = dataclasses.replace(SETTINGS, relu_split_share=0.0) if seed % 2 else SETTINGS
        verdict = verify(load_network(path), spec, settings)
        answers.append(verdict.status)
        if verdict.status != expected:
            failures.append(f"{spec.source}: {verdict.status} by {verdict.decided_by}, the oracle says {expected} "
                            f"({verdict.notes})")
            continue
        if verdict.status == "sat":
            found = verdict.counterexample
            assert found is not None
            if not region.box.contains(found.x):
                failures.append(f"{spec.source}: the witness lies outside the box as written")
            elif not violation_in_onnxruntime(path, spec, found.x):
                failures.append(f"{spec.source}: onnxruntime on the witness's cast does not violate the property")
            low, high = representable_bounds(region.box, np.dtype(np.float32))
            if found.moved_by_cast != int(np.count_nonzero(low > high)):
                failures.append(f"{spec.source}: {found.moved_by_cast} inputs reported moved by the cast, "
                                f"{int(np.count_nonzero(low > high))} intervals hold no float32 number")
    assert not failures, "\n".join(failures)
    if kind == "somewhere":
        assert "sat" in answers, answers  # the family does exercise the violated-somewhere case


def test_witness_point_stays_in_the_real_box_and_prefers_float32_numbers() -> None:
    """Where an interval holds a float32 number the witness is one (the cast moves nothing); where it
    holds none, the witness is the interval's nearest point, never a float32 number outside."""
    rng = np.random.default_rng(7)
    a, c = between_float32(rng, 300)
    lower = np.where(rng.random(300) < 0.5, a + 0.25 * (c - a), a - 0.5)
    upper = np.where(rng.random(300) < 0.5, a + 0.75 * (c - a), c + 0.5)
    upper = np.maximum(upper, lower)
    box = Box(lower, upper)
    x = rng.normal(scale=2.0, size=300)
    point = witness_point(x, box, np.dtype(np.float32))
    assert box.contains(point)
    low, high = representable_bounds(box, np.dtype(np.float32))
    holds_float32 = low <= high
    assert np.all(point[holds_float32].astype(np.float32).astype(np.float64) == point[holds_float32])
    # an interval strictly between two neighbouring float32 numbers holds none of them
    strictly_between = (lower > a) & (upper < c)
    assert not np.any(holds_float32 & strictly_between)
    assert np.all(point[~holds_float32] == np.clip(x, lower, upper)[~holds_float32])


def test_solver_rows_keep_every_point_of_the_exact_rows_and_no_tiny_coefficient() -> None:
    """Rows with coefficients below the solver threshold: every point that satisfies the exact rows
    (random points of the variable box, rows fitted around them) satisfies the solver's rows."""
    from verirepair.milp.model import SMALLEST_SOLVER_COEFFICIENT

    rng = np.random.default_rng(3)
    for _ in range(50):
        n, m = 6, 4
        model = MilpModel()
        lo = rng.normal(size=n) - rng.uniform(0, 2, size=n)
        hi = lo + rng.uniform(0, 2, size=n) * (rng.random(n) < 0.7)  # some fixed variables
        x = model.add_variables(lo, hi)
        coefficients = rng.normal(size=(m, n)) * np.where(rng.random((m, n)) < 0.4, 10.0 ** rng.uniform(-38, -9.1, (m, n)), 1.0)
        points = lo + rng.random((200, n)) * (hi - lo)
        activity = points @ coefficients.T
        model.add_rows(coefficients, x, activity.min(axis=0), activity.max(axis=0))
        rows = model.solver_rows()
        assert np.all(np.abs(rows.matrix.data) >= SMALLEST_SOLVER_COEFFICIENT)
        solver_activity = points @ rows.matrix.toarray().T
        assert np.all(solver_activity >= rows.lower[None, :]) and np.all(solver_activity <= rows.upper[None, :])


def test_network_encoding_with_tiny_weights_on_a_zero_width_box_is_feasible() -> None:
    """The collins_rul_cnn failure in small: a zero-width box at non-float32 values, equality rows of
    a network with weights below 1e-9, a clause that every point of the box violates. The point
    exists (the box's own point), so the MILP must find it; HiGHS, handed the tiny coefficients,
    called the model infeasible."""
    rng = np.random.default_rng(11)
    for seed in range(10):
        chain = with_tiny_weights(random_mlp(np.random.default_rng(seed), 40, [40, 40], 1, "relu", scale=4.0), rng,
                                  share=0.5, largest=-9.01)
        exact = float32_rounded(chain)
        a, c = between_float32(rng, 40, scale=5.0)
        value = a + 0.4 * (c - a)
        box = Box(value, value.copy())
        y = float(exact.forward(torch.tensor(value)[None, :])[0, 0])
        model, _, _ = encode_graph(exact.graph, box, interval_pre_bounds(exact, box), Clause(np.ones((1, 1)), np.array([y + 1e-6])), 1e-7)
        result = HighsSolver().solve(model, 30, MilpSettings())
        assert result.status == "feasible", (seed, result)


def test_collins_rul_cnn_wrong_unsat_is_now_a_confirmed_sat(benchmarks: Path, tmp_path: Path) -> None:
    """The instance of the issue: 380 fixed inputs at non-float32 values, violated everywhere."""
    folder = benchmarks / "collins_rul_cnn"
    onnx_path = folder / "onnx" / "NN_rul_small_window_20.onnx"
    vnnlib_path = folder / "vnnlib" / "monotonicity_CI_shift20_w20.vnnlib"
    network = load_network(onnx_path)
    spec = parse_vnnlib(vnnlib_path, network.n_inputs, network.n_outputs)
    verdict = verify(network, spec, dataclasses.replace(SETTINGS, timeout=60))
    assert verdict.status == "sat" and verdict.counterexample is not None
    assert verdict.counterexample.moved_by_cast > 0  # this box holds no float32 point
    results = f"sat\n{format_witness(verdict.counterexample)}\n"
    assert check_witness(onnx_path, vnnlib_path, results, tolerance=0.0) == (True, "ok")
