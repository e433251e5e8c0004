"""MILP encoding and back ends, checked against independent oracles.

Oracles: dense grid sampling of the true network (a lower bound can never exceed a sampled value,
and the optimiser's point, replayed through ``Chain.forward``, must reach the optimum: together
these show the encoding is exact, not a relaxation), and z3's exact rational arithmetic for
feasibility of a violation clause.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
import z3
from random_nets import interval_pre_bounds

from dense_chain import ActivationLayer, AffineLayer, Chain, MaxPoolLayer
from verirepair.errors import UnsupportedError
from verirepair.milp import (
    GurobiSolver,
    HighsSolver,
    MilpModel,
    MilpSettings,
    choose_solver,
    clause_relaxation,
    encode_graph,
    licence_size_limit,
    solve_with_fallback,
)
from verirepair.spec.model import Box, Clause

TIME_LIMIT_S = 30.0


# ---- helpers ---------------------------------------------------------------------------------
def random_chain(rng: np.random.Generator, n_in: int, hidden: list[int], n_out: int) -> Chain:
    sizes = [n_in, *hidden, n_out]
    layers: list = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(ActivationLayer("relu", a))
        layers.append(AffineLayer(torch.tensor(rng.normal(size=(b, a)), dtype=torch.float64),
                                  torch.tensor(rng.normal(scale=0.5, size=b), dtype=torch.float64)))
    return Chain(tuple(layers))


def random_box(rng: np.random.Generator, n: int) -> Box:
    lower = rng.uniform(-1.0, 0.0, size=n)
    return Box(lower, lower + rng.uniform(0.5, 2.0, size=n))


def grid(box: Box, per_axis: int) -> np.ndarray:
    axes = [np.linspace(l, u, per_axis) for l, u in zip(box.lower, box.upper)]
    return np.array(list(itertools.product(*axes)))


def forward(chain: Chain, x: np.ndarray) -> np.ndarray:
    return chain.forward(torch.tensor(np.atleast_2d(x), dtype=torch.float64)).numpy()


def check_minimum_against_grid(chain: Chain, box: Box, c: np.ndarray, loosen: float = 0.0) -> None:
    model, xs, ys = encode_graph(chain.graph, box, interval_pre_bounds(chain, box, loosen), None, 0.0,
                                 objective_rows=c)
    result = HighsSolver().solve(model, TIME_LIMIT_S)
    assert result.status == "optimal", result.note
    assert model.max_violation(result.x) <= 1e-7
    per_axis = 151 if box.dim == 2 else 31
    sampled_min = float((forward(chain, grid(box, per_axis)) @ c).min())
    assert result.objective <= sampled_min + 1e-6
    x_opt = result.x[xs]
    assert box.contains(x_opt, tolerance=1e-9)
    replayed = float(forward(chain, x_opt)[0] @ c)
    assert replayed == pytest.approx(result.objective, abs=1e-6)
    assert result.x[ys] == pytest.approx(forward(chain, x_opt)[0], abs=1e-6)


def rational(value: float) -> z3.ArithRef:
    f = Fraction(float(value))
    return z3.RealVal(f"{f.numerator}/{f.denominator}")


def z3_clause_satisfiable(chain: Chain, box: Box, clause: Clause) -> bool:
    """Exact oracle: is there x in the box with A·f(x) <= b? (ReLU as If, exact rationals)."""
    solver = z3.Solver()
    xs = [z3.Real(f"x{i}") for i in range(box.dim)]
    for x, l, u in zip(xs, box.lower, box.upper):
        solver.add(x >= rational(l), x <= rational(u))
    values: list = xs
    for layer in chain.layers:
        if isinstance(layer, AffineLayer):
            W, b = layer.weight.numpy(), layer.bias.numpy()
            values = [z3.Sum([rational(W[i, j]) * values[j] for j in range(W.shape[1])])
                      + rational(b[i]) for i in range(W.shape[0])]
        else:
            assert layer.kind == "relu"
            values = [z3.If(v > 0, v, 0) for v in values]
    for row, bound in zip(clause.A, clause.b):
        solver.add(z3.Sum([rational(a) * v for a, v in zip(row, values)]) <= rational(bound))
    verdict = solver.check()
    assert verdict in (z3.sat, z3.unsat)
    return verdict == z3.sat


def milp_clause_feasible(chain: Chain, box: Box, clause: Clause, margin: float = 0.0) -> bool:
    model, xs, ys = encode_graph(chain.graph, box, interval_pre_bounds(chain, box), clause, margin)
    result = HighsSolver().solve(model, TIME_LIMIT_S)
    assert result.status in ("feasible", "infeasible"), result.note
    if result.status == "feasible":
        y = forward(chain, result.x[xs])[0]
        relaxed = clause_relaxation(clause.A, clause.b, model.lower[ys], model.upper[ys], margin)
        assert clause.violated_by(y, tolerance=float(relaxed.max()) + 1e-6)
    return result.status == "feasible"


# ---- ReLU chains -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_relu_minimum_matches_grid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 4))
    hidden = [int(h) for h in rng.integers(3, 7, size=int(rng.integers(1, 3)))]
    chain = random_chain(rng, n_in, hidden, int(rng.integers(1, 4)))
    check_minimum_against_grid(chain, random_box(rng, n_in), rng.normal(size=chain.n_outputs))


@pytest.mark.parametrize("seed", range(4))
def test_loose_pre_bounds_give_the_same_optimum(seed: int) -> None:
    """Exactness must not depend on how tight the (sound) pre-bounds are."""
    rng = np.random.default_rng(100 + seed)
    chain = random_chain(rng, 2, [5, 4], 2)
    check_minimum_against_grid(chain, random_box(rng, 2), rng.normal(size=2), loosen=3.0)


@pytest.mark.parametrize("seed", range(10))
def test_clause_feasibility_agrees_with_z3(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n_in, n_out = int(rng.integers(2, 4)), int(rng.integers(1, 4))
    chain = random_chain(rng, n_in, [int(h) for h in rng.integers(3, 7, size=2)], n_out)
    box = random_box(rng, n_in)
    A = rng.normal(size=(int(rng.integers(1, 3)), n_out))
    x0 = rng.uniform(box.lower, box.upper)
    reachable = A @ forward(chain, x0)[0]
    # reachable + 0.01: certainly sat; far below: certainly unsat; in between: either, and the
    # two oracles must agree on which.
    outcomes = []
    for shift in (0.01, -0.3, -1.0, -100.0):
        clause = Clause(A, reachable + shift)
        expected = z3_clause_satisfiable(chain, box, clause)
        assert milp_clause_feasible(chain, box, clause) == expected, f"shift {shift}"
        outcomes.append(expected)
    assert outcomes[0] and not outcomes[-1]


def test_margin_relaxes_the_clause() -> None:
    rng = np.random.default_rng(7)
    chain = random_chain(rng, 2, [4], 1)
    box = random_box(rng, 2)
    model, _, _ = encode_graph(chain.graph, box, interval_pre_bounds(chain, box), None, 0.0,
                               objective_rows=np.ones(1))
    minimum = HighsSolver().solve(model, TIME_LIMIT_S).objective
    clause = Clause(np.ones((1, 1)), np.array([minimum - 1e-3]))
    assert not milp_clause_feasible(chain, box, clause, margin=0.0)
    assert milp_clause_feasible(chain, box, clause, margin=2e-3)


# ---- max-pool --------------------------------------------------------------------------------
def pool_chain(rng: np.random.Generator, with_relu: bool) -> Chain:
    first = AffineLayer(torch.tensor(rng.normal(size=(6, 2))), torch.tensor(rng.normal(size=6)))
    pool = MaxPoolLayer(torch.tensor([[0, 1, 2], [2, 3, 4], [4, 5, 0]]), 6)
    last = AffineLayer(torch.tensor(rng.normal(size=(2, 3))), torch.tensor(rng.normal(size=2)))
    middle = (ActivationLayer("relu", 6), pool) if with_relu else (pool,)
    return Chain((first, *middle, last))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_relu", [False, True])
def test_maxpool_minimum_matches_grid(seed: int, with_relu: bool) -> None:
    rng = np.random.default_rng(300 + seed)
    check_minimum_against_grid(pool_chain(rng, with_relu), random_box(rng, 2), rng.normal(size=2))


def test_maxpool_shortcut_when_one_input_dominates() -> None:
    """x0 + 10 always beats x0 and x1 on [0, 1]^2: the window needs no binary, and is still exact."""
    first = AffineLayer(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                        torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64))
    pool = MaxPoolLayer(torch.tensor([[0, 1, 2], [1, 2, 1]]), 3)
    last = AffineLayer(torch.tensor([[1.0, -2.0]], dtype=torch.float64),
                       torch.tensor([0.0], dtype=torch.float64))
    chain = Chain((first, pool, last))
    box = Box(np.zeros(2), np.ones(2))
    model, _, _ = encode_graph(chain.graph, box, interval_pre_bounds(chain, box), None, 0.0,
                               objective_rows=np.ones(1))
    assert model.n_integer == 2  # only the undecided window [x0, x1] has binaries
    check_minimum_against_grid(chain, box, np.ones(1))


# ---- unsupported -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_smooth_activation_is_unsupported(kind: str) -> None:
    rng = np.random.default_rng(0)
    relu_chain = random_chain(rng, 2, [3], 1)
    chain = Chain((relu_chain.layers[0], ActivationLayer(kind, 3), relu_chain.layers[2]))
    box = Box(np.zeros(2), np.ones(2))
    with pytest.raises(UnsupportedError, match=f"piecewise-linear network \\(found {kind}\\)"):
        encode_graph(chain.graph, box, interval_pre_bounds(chain, box), None, 0.0)


def test_pre_bounds_count_is_checked() -> None:
    chain = random_chain(np.random.default_rng(0), 2, [3, 3], 1)
    with pytest.raises(ValueError, match="pre_bounds has 1 entries"):
        encode_graph(chain.graph, Box(np.zeros(2), np.ones(2)), [(np.zeros(3), np.ones(3))], None, 0.0)


# ---- Gurobi ----------------------------------------------------------------------------------
def require_gurobi() -> None:
    pytest.importorskip("gurobipy", reason="gurobipy is not installed; Gurobi back end untested")
    if not GurobiSolver().available():
        pytest.skip("gurobipy is installed but has no usable licence")


def oversized_model() -> MilpModel:
    model = MilpModel()
    x = model.add_variables(np.zeros(2500), np.ones(2500))
    model.add_rows(np.ones((1, 2500)), x, 3.0, np.inf)
    model.set_objective(x, np.linspace(1.0, 2.0, 2500))
    return model


@pytest.mark.parametrize("seed", range(4))
def test_gurobi_and_highs_agree_on_small_models(seed: int) -> None:
    require_gurobi()
    rng = np.random.default_rng(400 + seed)
    chain = random_chain(rng, 3, [6, 5], 2)
    box = random_box(rng, 3)
    model, _, _ = encode_graph(chain.graph, box, interval_pre_bounds(chain, box), None, 0.0,
                               objective_rows=rng.normal(size=2))
    assert model.n_vars < 2000
    solver, note = choose_solver(model, "auto")
    assert solver.name == "gurobi" and note == ""
    by_gurobi = GurobiSolver().solve(model, TIME_LIMIT_S)
    by_highs = HighsSolver().solve(model, TIME_LIMIT_S)
    assert by_gurobi.status == by_highs.status == "optimal"
    assert by_gurobi.objective == pytest.approx(by_highs.objective, abs=1e-6)


def test_auto_picks_highs_over_the_licence_limit() -> None:
    require_gurobi()
    if licence_size_limit() is None:
        pytest.skip("Gurobi licence is unrestricted; size-limit fallback not exercised")
    model = oversized_model()
    solver, note = choose_solver(model, "auto")
    assert solver.name == "highs"
    assert "licence limited to 2000" in note and "2500 variables" in note
    result = solve_with_fallback(model, TIME_LIMIT_S)
    assert result.solver == "highs" and result.status == "optimal"
    assert result.objective == pytest.approx(3.0 + 3 / 2499, abs=1e-6)  # three cheapest ones
    assert "licence" in result.note


def test_licence_refusal_at_solve_time_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    require_gurobi()
    if licence_size_limit() is None:
        pytest.skip("Gurobi licence is unrestricted; size-limit fallback not exercised")
    model = oversized_model()
    refused = GurobiSolver().solve(model, TIME_LIMIT_S)
    assert refused.status == "error" and refused.licence_refused
    # Pretend `accepts` could not predict the refusal: solve_with_fallback must still get an answer.
    monkeypatch.setattr(GurobiSolver, "accepts", lambda self, model: (True, ""))
    result = solve_with_fallback(model, TIME_LIMIT_S)
    assert result.solver == "highs" and result.status == "optimal"
    assert "size-limited licence refused" in result.note and "using HiGHS" in result.note


def test_forced_solver_and_settings_are_checked() -> None:
    model = oversized_model()
    assert choose_solver(model, "highs")[0].name == "highs"
    with pytest.raises(Exception, match="unknown MILP solver"):
        choose_solver(model, "cplex")
    with pytest.raises(ValueError, match="threads"):
        MilpSettings(threads=0)


def test_a_highs_solve_prints_nothing_on_stdout() -> None:
    """HiGHS's banner (printed below Python, on file descriptor 1) must not reach stdout, where
    ``verify --json`` writes its one JSON object."""
    program = ("import numpy as np\n"
               "from verirepair.milp import HighsSolver, MilpModel\n"
               "m = MilpModel(); m.add_binaries(2); m.set_objective(np.array([0, 1]), np.array([1.0, -1.0]))\n"
               "assert HighsSolver().solve(m, 5.0).status == 'optimal'\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
