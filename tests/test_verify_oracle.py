"""The verifier against exact oracles on hundreds of random tiny (network, spec) pairs.

Each case is a random ReLU MLP saved as ONNX (float32 weights) and a random `Spec` (one or two
regions, 1–3 clauses of 1–2 rows). The oracle reasons about the network stored in the file, in
exact arithmetic: z3 over the rationals (ReLU as ``If``) for most seeds, an exact MILP for the
others. For every clause the MILP first gives the optimum ``t* = min_x max_r (A_r·y - b_r)`` and the
clause offsets are moved so that ``t*`` lands at a chosen signed distance from 0 (never within a
small gap of it), so a float32 evaluation cannot differ from the exact answer and both outcomes
occur. Asserted: never a wrong answer, every ``sat`` witness violates the spec when re-run in
onnxruntime, and every case is decided. Twelve-input cases go through the MILP search instead of
input splitting; sigmoid cases (no exact oracle) are checked for consistency with dense sampling.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from dense_chain import ActivationLayer, Chain
from oracles import milp_min_margin, violation_in_onnxruntime, z3_violation_exists
from random_nets import float32_rounded, random_mlp, save_onnx

from verirepair.network import load_network
from verirepair.spec import Box, Clause, Region, Spec
from verirepair.verify import Verdict, VerifySettings, verify

SETTINGS = VerifySettings(timeout=20, random_samples=200, pgd_restarts=8, pgd_steps=20)
SIGMOID_SETTINGS = VerifySettings(timeout=8, random_samples=200, pgd_restarts=8, pgd_steps=20)
# A clause's exact optimum t* is kept at least this far (relative to the output scale) from 0:
# float32 inference differs from exact arithmetic by ~1e-7 relative, so no answer can flip.
RELATIVE_GAP = 1e-4
CHUNK = 12
Z3_MAX_HIDDEN = 12
SMALL_CHUNKS = 18  # 216 small cases
WIDE_CHUNKS = 3  # 36 cases with 12 inputs
SIGMOID_CHUNKS = 3  # 36 sigmoid cases


pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---- random problems ----------------------------------------------------------------------------
def random_region_box(rng: np.random.Generator, n: int) -> Box:
    center = rng.normal(scale=0.7, size=n)
    radius = rng.uniform(0.05, 1.0, size=n) * rng.uniform(0.2, 1.0)
    return Box(center - radius, center + radius)


def random_rows(rng: np.random.Generator, n_rows: int, n_out: int) -> np.ndarray:
    """Random dense rows, or the ``y_i - y_j`` / ``±y_i`` rows that real specs use."""
    if rng.random() < 0.5:
        return rng.normal(size=(n_rows, n_out))
    A = np.zeros((n_rows, n_out))
    for r in range(n_rows):
        i, j = rng.choice(n_out, size=2, replace=False)
        A[r, i] = 1.0
        if rng.random() < 0.7:
            A[r, j] = -1.0
        else:
            A[r, i] = rng.choice([-1.0, 1.0])
    return A


def outputs_on(chain: Chain, box: Box, rng: np.random.Generator, count: int = 300) -> np.ndarray:
    x = box.lower + rng.random((count, box.dim)) * (box.upper - box.lower)
    return chain.forward(torch.tensor(x)).numpy()


def placed_offsets(rng: np.random.Generator, chain: Chain, box: Box, A: np.ndarray, y: np.ndarray,
                   violated: bool) -> tuple[np.ndarray, float]:
    """Offsets ``b`` for rows ``A`` near the sampled outputs ``y``, then moved together so that the
    clause's exact optimum t* lies at a random distance (from the gap up to 0.3·scale) from 0,
    below 0 (the clause is violated) iff ``violated``. Moving every ``b_r`` by δ moves t* by -δ.
    Returns ``b`` and the final t*."""
    values = y @ A.T  # [samples, rows]
    scale = 1.0 + float(np.abs(values).max())
    gap = RELATIVE_GAP * scale
    b = np.quantile(values, rng.uniform(0.0, 0.6), axis=0)
    t_star = milp_min_margin(chain, box, A, b)
    distance = gap * 10.0 ** rng.uniform(0.0, np.log10(0.3 * scale / gap))
    target = -distance if violated else distance
    return b + (t_star - target), target


def relu_case(seed: int, tmp_path: Path, n_inputs: int | None = None) -> tuple[Path, Chain, Spec, list[list[float]]]:
    """A random network file, its exact float64 chain, a spec, and every clause's exact t* per region."""
    rng = np.random.default_rng(seed)
    n_in = n_inputs or int(rng.integers(2, 4))
    hidden = [int(h) for h in rng.integers(3, 9, size=int(rng.integers(1, 3)))]
    n_out = int(rng.integers(2, 4))
    chain = random_mlp(rng, n_in, hidden, n_out, "relu", scale=float(rng.uniform(1.0, 2.5)))
    path = save_onnx(chain, tmp_path / f"relu_{seed}.onnx")
    exact = float32_rounded(chain)
    want_sat = rng.random() < 0.5
    regions, optima = [], []
    n_regions = int(rng.integers(1, 3))
    n_clauses = [int(rng.integers(1, 4)) for _ in range(n_regions)]
    # when the spec should be violated, one random clause surely is (others maybe); else none is
    violating_region = int(rng.integers(n_regions)) if want_sat else -1
    for r in range(n_regions):
        box = random_region_box(rng, n_in)
        y = outputs_on(exact, box, rng)
        clauses, region_optima = [], []
        chosen = int(rng.integers(n_clauses[r])) if r == violating_region else -1
        for c in range(n_clauses[r]):
            A = random_rows(rng, int(rng.integers(1, 3)), n_out)
            violated = c == chosen or (want_sat and rng.random() < 0.3)
            b, t_star = placed_offsets(rng, exact, box, A, y, violated)
            clauses.append(Clause(A, b))
            region_optima.append(t_star)
        regions.append(Region(box, tuple(clauses)))
        optima.append(region_optima)
    spec = Spec(n_in, n_out, tuple(regions), source=f"seed {seed}")
    return path, exact, spec, optima


def check_against_oracle(seed: int, tmp_path: Path, n_inputs: int | None,
                         settings: VerifySettings = SETTINGS) -> tuple[str | None, Verdict, bool]:
    """The verdict for one seed, whether the oracle says sat, and what is wrong (None if nothing).

    The oracle is z3 for 3 seeds in 4 when the net has at most `Z3_MAX_HIDDEN` hidden neurons (z3's
    case splitting grows fast beyond), the exact MILP optimum otherwise."""
    path, exact, spec, optima = relu_case(seed, tmp_path, n_inputs)
    clause_sat = [[t < 0 for t in region] for region in optima]
    hidden = sum(layer.size for layer in exact.layers if isinstance(layer, ActivationLayer))
    if seed % 4 != 3 and hidden <= Z3_MAX_HIDDEN:  # independent exact check, also of the MILP optima
        for region, answers in zip(spec.regions, clause_sat):
            for clause, expected in zip(region.clauses, answers):
                found = z3_violation_exists(exact, region.box, clause.A, clause.b)
                assert found == expected, f"seed {seed}: z3 and the MILP oracle disagree on a clause"
    oracle_sat = any(any(answers) for answers in clause_sat)
    verdict = verify(load_network(path), spec, settings)
    if verdict.status not in ("sat", "unsat"):
        return f"seed {seed}: undecided ({verdict.status}, {verdict.decided_by}, {verdict.notes})", verdict, oracle_sat
    if (verdict.status == "sat") != oracle_sat:
        return (f"seed {seed}: WRONG ANSWER {verdict.status} ({verdict.decided_by}), "
                f"the oracle says {'sat' if oracle_sat else 'unsat'}"), verdict, oracle_sat
    deciders = verdict.decided_by.split("+")
    if verdict.status == "unsat" and ("milp" in deciders or "milp-bounds" in deciders):
        assert verdict.rests_on_solver, f"seed {seed}: a MILP-decided unsat not marked as resting on the solver"
    if verdict.status == "unsat" and deciders == ["alpha-crown"]:
        assert not verdict.rests_on_solver, f"seed {seed}: an α-CROWN proof marked as resting on a solver"
    if verdict.status == "sat":
        assert verdict.counterexample is not None
        if not violation_in_onnxruntime(path, spec, verdict.counterexample.x):
            return f"seed {seed}: the counterexample does not violate the spec in onnxruntime", verdict, oracle_sat
    return None, verdict, oracle_sat


def run_chunk(seeds: range, tmp_path: Path, n_inputs: int | None = None, settings: VerifySettings = SETTINGS) -> Counter:
    """Check every seed; fail naming each wrong or undecided seed. Returns a tally of oracle
    answers (``oracle sat``/``oracle unsat``), of the verdicts' deciders, and of the cases whose
    intermediate bounds were MILP-refined."""
    failures, tally = [], Counter()
    for seed in seeds:
        problem, verdict, oracle_sat = check_against_oracle(seed, tmp_path, n_inputs, settings)
        tally["oracle sat" if oracle_sat else "oracle unsat"] += 1
        tally[verdict.decided_by] += 1
        tally["milp-refined bounds"] += any(note.startswith("MILP-refined bounds") for note in verdict.notes)
        if problem:
            failures.append(problem)
    assert not failures, f"{len(failures)} of {len(seeds)} cases failed:\n" + "\n".join(failures)
    # deterministic seeds: the generator gives every chunk both answers
    assert tally["oracle sat"] and tally["oracle unsat"], tally
    return tally


# ---- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", range(SMALL_CHUNKS))
@pytest.mark.parametrize("leaves", ["leaf-milp", "split-only"])
def test_tiny_relu_networks_agree_with_exact_oracle(chunk: int, leaves: str, tmp_path: Path) -> None:
    """2–3 inputs: decided by falsification, α-CROWN or input-split branch and bound, whose boxes
    (all with few unstable ReLUs here) go to the leaf MILP first (two solved at once), or are
    only ever split."""
    settings = (dataclasses.replace(SETTINGS, leaf_milp_workers=2, leaf_milp_after_boxes=0) if leaves == "leaf-milp"
                else dataclasses.replace(SETTINGS, leaf_milp_max_unstable=0))
    run_chunk(range(chunk * CHUNK, (chunk + 1) * CHUNK), tmp_path, settings=settings)


def test_tiny_relu_networks_with_root_alpha_before_input_split_agree_with_exact_oracle(tmp_path: Path) -> None:
    """The other order for few inputs: α-CROWN on the whole box first (deciding some cases by
    itself), input split after."""
    settings = dataclasses.replace(SETTINGS, root_alpha_before_input_split=True)
    tally = run_chunk(range(CHUNK), tmp_path, settings=settings)
    assert tally["input-split"] + tally["alpha-crown"] >= 1, tally


@pytest.mark.parametrize("chunk", range(WIDE_CHUNKS))
@pytest.mark.parametrize("search", ["relu-split", "relu-split-top-score", "milp", "milp-bounds"])
def test_twelve_input_relu_networks_agree_with_exact_oracle(chunk: int, search: str, tmp_path: Path) -> None:
    """12 inputs: above `input_split_max_dims`, so open clauses go to ReLU-split branch and bound
    (given all the time, so the MILP sees only multi-row clauses; branching by filtered smart
    branching, or on the best-scored neuron) or straight to the MILP search; or, first, to
    MILP-refined intermediate bounds whatever the clause's gap (then ReLU split)."""
    first = 10_000 + chunk * CHUNK
    settings = {"relu-split": dataclasses.replace(SETTINGS, relu_split_share=1.0, relu_split_candidates=3),
                "relu-split-top-score": dataclasses.replace(SETTINGS, relu_split_share=1.0, relu_split_candidates=1),
                "milp": dataclasses.replace(SETTINGS, relu_split_share=0.0),
                "milp-bounds": dataclasses.replace(SETTINGS, relu_split_share=1.0, milp_refine_gap=0.0,
                                                   milp_refine_share=0.5)}[search]
    tally = run_chunk(range(first, first + CHUNK), tmp_path, 12, settings)
    used = {"milp-bounds": "milp-refined bounds", "relu-split-top-score": "relu-split"}.get(search, search)
    assert tally[used] >= 1, f"no case used {used}: {tally}"


# ---- sigmoid networks: consistency with dense sampling ------------------------------------------
def sigmoid_case(seed: int, tmp_path: Path) -> tuple[Path, Chain, Spec, torch.Tensor]:
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(2, 4))
    hidden = [int(h) for h in rng.integers(3, 9, size=int(rng.integers(1, 3)))]
    chain = random_mlp(rng, n_in, hidden, 2, "sigmoid", scale=float(rng.uniform(1.0, 3.0)))
    path = save_onnx(chain, tmp_path / f"sigmoid_{seed}.onnx")
    exact = float32_rounded(chain)
    box = random_region_box(rng, n_in)
    per_axis = {2: 200, 3: 34}[n_in]
    axes = [torch.linspace(l, u, per_axis, dtype=torch.float64) for l, u in zip(box.lower, box.upper)]
    grid = torch.cartesian_prod(*axes)
    y = exact.forward(grid).numpy()
    clauses = []
    for _ in range(int(rng.integers(1, 3))):
        A = random_rows(rng, int(rng.integers(1, 3)), 2)
        values = y @ A.T
        scale = 1.0 + float(np.abs(values).max())
        sampled_min = values.max(axis=1).min()  # min over the grid of max_r A_r·y
        # equal offsets b_r = sampled_min - shift put the grid's optimum of max_r (A_r·y - b_r) at
        # shift: below 0 (a grid point violates) or above it (none does; the verifier may still
        # find a violation between grid points, which is then a real one)
        shift = scale * 10.0 ** rng.uniform(-2.5, -0.7) * rng.choice([-1.0, 1.0])
        b = np.full(A.shape[0], sampled_min) - shift
        clauses.append(Clause(A, b))
    spec = Spec(n_in, 2, (Region(box, tuple(clauses)),), source=f"sigmoid seed {seed}")
    return path, exact, spec, grid


@pytest.mark.parametrize("chunk", range(SIGMOID_CHUNKS))
def test_sigmoid_networks_consistent_with_dense_sampling(chunk: int, tmp_path: Path) -> None:
    failures, statuses = [], Counter()
    for seed in range(30_000 + chunk * CHUNK, 30_000 + (chunk + 1) * CHUNK):
        path, exact, spec, grid = sigmoid_case(seed, tmp_path)
        (region,) = spec.regions
        y = exact.forward(grid).numpy()
        sampled_violation = any(np.all(y @ c.A.T <= c.b, axis=1).any() for c in region.clauses)
        verdict = verify(load_network(path), spec, SIGMOID_SETTINGS)
        statuses[verdict.status] += 1
        if verdict.status == "sat":
            assert verdict.counterexample is not None
            if not violation_in_onnxruntime(path, spec, verdict.counterexample.x):
                failures.append(f"seed {seed}: the counterexample does not violate the spec in onnxruntime")
        elif verdict.status == "unsat" and sampled_violation:
            failures.append(f"seed {seed}: WRONG ANSWER unsat, a grid point violates the spec")
    assert not failures, "\n".join(failures)
    # the grid decides these (clearly violated or clearly not), so the verifier should too
    assert statuses["sat"] + statuses["unsat"] >= CHUNK - 2, statuses


# ---- the same oracle with every bound computation on a CUDA device ------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device; the verifier's device test needs one")
@pytest.mark.parametrize("search", ["input-split", "relu-split"])
def test_verifier_on_cuda_agrees_with_exact_oracle(search: str, tmp_path: Path) -> None:
    """Falsification, CROWN and both branch-and-bound searches with ``device="cuda"``: a tensor
    left on the CPU anywhere on the way is an error here, which CPU-only runs cannot show."""
    on_cuda = dataclasses.replace(SETTINGS, device="cuda")
    if search == "input-split":
        run_chunk(range(CHUNK), tmp_path, settings=on_cuda)
    else:
        tally = run_chunk(range(10_000, 10_000 + CHUNK), tmp_path, 12, dataclasses.replace(on_cuda, relu_split_share=1.0))
        assert tally["relu-split"] >= 1, f"no case was decided by relu-split: {tally}"


# ---- out of device memory: never a guess ----------------------------------------------------------
def test_out_of_memory_in_relu_split_leaves_the_clause_to_the_milp(monkeypatch, tmp_path: Path) -> None:
    """ReLU split that runs out of (device) memory after its first batch gives up on the clause,
    and the exact MILP still decides every case in agreement with the oracle."""
    from verirepair.verify import relu_split

    original, calls = relu_split._bound_and_filter, []

    def first_call_only(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise torch.OutOfMemoryError("test: device memory cap reached")
        return original(*args, **kwargs)

    monkeypatch.setattr(relu_split, "_bound_and_filter", first_call_only)
    tally = run_chunk(range(10_000, 10_000 + CHUNK), tmp_path, 12, dataclasses.replace(SETTINGS, relu_split_share=1.0))
    assert tally["relu-split"] == 0 and tally["milp"] >= 1, tally


def test_out_of_memory_while_deciding_a_region_is_unknown_with_a_note(monkeypatch, tmp_path: Path) -> None:
    from verirepair.verify import pipeline

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("test: device memory cap reached")

    monkeypatch.setattr(pipeline, "_decide_region", out_of_memory)
    undecided = 0
    for seed in range(CHUNK):
        path, _, spec, _ = relu_case(seed, tmp_path, None)
        verdict = verify(load_network(path), spec, SETTINGS)
        assert verdict.status != "unsat", f"seed {seed}: unsat without a decided region"
        if verdict.status == "unknown":
            undecided += 1
            assert any("device memory" in note for note in verdict.notes), verdict.notes
    assert undecided >= 1  # not every case is falsified before the regions are decided
