"""Activation-split branch and bound (sigmoid/tanh neurons) against dense sampling.

* Every domain's bound lies below the objective at every sampled box point whose pre-activations
  fall inside the domain's intervals (the domains a search creates, several levels deep).
* Where sampling and gradient descent find a violation, the search never answers "proven", and
  mostly finds a counterexample itself (checked here in float64); a threshold halfway between
  α-CROWN's bound and the sampled minimum, which α-CROWN alone cannot prove, it mostly proves.
* The verifier's longer α-CROWN runs on the intermediate bounds (before splitting) give clause
  bounds below every sampled value, and prove a threshold that the first run leaves open.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import (
    float32_rounded,
    forward_layers,
    random_box,
    random_mlp,
    sample_box,
    save_onnx,
)

from verirepair.bounds import BoundEngine
from verirepair.network import load_network
from verirepair.spec import Box, Clause, Region, Spec
from verirepair.verify import Deadline, verify
from verirepair.verify.activation_split import (
    ActivationSplitter,
    activation_split_search,
)
from verirepair.verify.objective import RegionRows
from verirepair.verify.pipeline import _clause_bounds, _escalated_bounds
from verirepair.verify.result import Counterexample
from verirepair.verify.settings import VerifySettings

F64 = torch.float64
N_IN = 12  # above the input-split limit: the case this search is for


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _problem(seed: int, kind: str):
    chain = random_mlp(seed, N_IN, [10, 10], 2, kind, scale=2.5)
    lower, upper = random_box(seed, N_IN, width=1.0)
    objective = torch.tensor(np.random.default_rng(seed).normal(size=2), dtype=F64)
    return chain, lower, upper, objective


def _sampled_minimum(chain, lower, upper, objective, seed: int) -> tuple[float, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Smallest objective over 20,000 samples refined by projected gradient descent."""
    x = sample_box(seed, lower, upper, 20_000)[0].clone().requires_grad_(True)
    for _ in range(100):
        value = chain.forward(x) @ objective
        (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            x -= 0.01 * (upper - lower) * grad.sign()
            x.copy_(torch.maximum(torch.minimum(x, upper), lower))
    with torch.no_grad():
        value = chain.forward(x) @ objective
    best = int(value.argmin())
    return float(value[best]), x[best].detach()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["sigmoid", "tanh"]))
def test_domain_bounds_hold_on_sampled_points_inside_the_domain(seed: int, kind: str) -> None:
    chain, lower, upper, objective = _problem(seed, kind)
    engine = BoundEngine(chain.graph)
    layers = engine.layer_bounds(lower, upper, "crown")
    splitter = ActivationSplitter(engine, objective, 0.0, lower, upper)
    domains, branch, _ = splitter.bound([l for l, _ in layers.pre_activation], [u for _, u in layers.pre_activation])
    for _ in range(4):  # four levels of splits: 16 domains
        domains, branch, _ = splitter.bound(*splitter.children(domains, branch))
    x = sample_box(seed, lower, upper, 20_000)[0]
    y, pre_activations = forward_layers(chain, x)
    value = y @ objective
    checked = 0
    for d in range(domains.size):
        inside = torch.ones(x.shape[0], dtype=torch.bool)
        for l, u, z in zip(domains.lower, domains.upper, pre_activations):
            inside &= ((z >= l[d] - 1e-9) & (z <= u[d] + 1e-9)).all(dim=1)
        if bool(inside.any()):
            checked += 1
            assert float(domains.bound[d]) <= float(value[inside].min()) + 1e-9
    assert checked > 0


def _search(chain, lower, upper, objective, offset: float, seconds: float):  # type: ignore[no-untyped-def]
    engine = BoundEngine(chain.graph)
    layers = engine.layer_bounds(lower, upper, "alpha-crown")
    pre = [(l[0], u[0]) for l, u in layers.pre_activation]

    def margin_of(y: torch.Tensor) -> torch.Tensor:
        return y @ objective + offset

    def confirm(x: np.ndarray) -> Counterexample | None:
        y = chain.forward(torch.tensor(x, dtype=F64).reshape(1, -1))[0]
        return Counterexample(x, y.numpy()) if float(y @ objective) + offset <= 0 else None

    # a budget of CPU seconds on one thread: the same work however loaded the machine is
    return activation_split_search(engine, objective, offset, lower, upper, pre, VerifySettings(),
                                   Deadline(seconds, clock=time.process_time), margin_of, confirm)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_search_proves_what_alpha_crown_alone_cannot_and_finds_violations(kind: str) -> None:
    proven_beyond_alpha = violations_found = 0
    for seed in range(4):
        chain, lower, upper, objective = _problem(seed, kind)
        minimum, _ = _sampled_minimum(chain, lower, upper, objective, seed)
        engine = BoundEngine(chain.graph)
        alpha = float(engine.output_bounds(lower, upper, objective.reshape(1, -1), method="alpha-crown", alpha_steps=30).lower)
        assert alpha <= minimum + 1e-9
        # a threshold halfway between α-CROWN's bound and the sampled minimum
        outcome = _search(chain, lower, upper, objective, -(alpha + minimum) / 2, 6.0)
        assert outcome.status in ("proven", "unknown", "timeout")
        proven_beyond_alpha += outcome.status == "proven"
        # a threshold just above the sampled minimum: violated
        violated = _search(chain, lower, upper, objective, -minimum - 1e-3 * (abs(minimum) + 1), 6.0)
        assert violated.status != "proven"
        if violated.status == "sat":
            violations_found += 1
            assert violated.counterexample is not None
            x = torch.tensor(violated.counterexample.x, dtype=F64)
            assert bool((x >= lower[0] - 1e-12).all() and (x <= upper[0] + 1e-12).all())
    # measured: 4 and 3 (sigmoid), 3 and 2 (tanh) of 4, on CPU-time budgets, so loaded or not
    assert proven_beyond_alpha >= 2 and violations_found >= 1


def test_out_of_memory_halves_the_batch_and_the_search_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device memory cap hit while bounding a batch of children: the batch is halved and the
    frontier kept, so the proof still comes, bounded in batches below the failing size."""
    chain, lower, upper, objective = _problem(0, "sigmoid")
    minimum, _ = _sampled_minimum(chain, lower, upper, objective, 0)
    alpha = float(BoundEngine(chain.graph).output_bounds(lower, upper, objective.reshape(1, -1), method="alpha-crown", alpha_steps=30).lower)
    real_bound = ActivationSplitter.bound
    sizes: list[int] = []
    refused: list[int] = []

    def capped(self, lower_bounds, upper_bounds, paths=None):  # type: ignore[no-untyped-def]
        if lower_bounds[0].shape[0] > 8:
            refused.append(lower_bounds[0].shape[0])
            raise torch.OutOfMemoryError("simulated device memory cap")
        sizes.append(lower_bounds[0].shape[0])
        return real_bound(self, lower_bounds, upper_bounds, paths)

    monkeypatch.setattr(ActivationSplitter, "bound", capped)
    outcome = _search(chain, lower, upper, objective, -(alpha + 0.8 * (minimum - alpha)), 10.0)
    assert outcome.status == "proven"
    assert refused and max(sizes) <= 8 and len(sizes) > 2


def _deep_problem(seed: int, kind: str, n_outputs: int = 1):  # type: ignore[no-untyped-def]
    """Four hidden layers of 16 over 12 inputs (float32 weights, as an ONNX file stores them)."""
    chain = float32_rounded(random_mlp(seed, N_IN, [16] * 4, n_outputs, kind, scale=2.5))
    lower, upper = random_box(seed, N_IN, width=1.0)
    return chain, lower, upper


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["sigmoid", "tanh"]))
def test_escalated_clause_bounds_hold_on_sampled_points(seed: int, kind: str) -> None:
    chain, lower, upper = _deep_problem(seed, kind, n_outputs=3)
    rng = np.random.default_rng(seed)
    clauses = tuple(Clause(rng.normal(size=(2, 3)), rng.normal(size=2)) for _ in range(2))
    region = Region(Box(lower[0].numpy(), upper[0].numpy()), clauses)
    rows = RegionRows.of(region, 3, torch.device("cpu"))
    engine = BoundEngine(chain.graph)
    # an infinite decision margin keeps every clause open, so both runs happen whatever the bounds
    quick = VerifySettings(alpha_steps=10, sshaped_alpha_escalation=(15, 30), decision_margin=float("inf"))
    layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=5)
    first = _clause_bounds(engine, rows, lower, upper, layers, quick)
    notes: list[str] = []
    _, bounds = _escalated_bounds(engine, rows, lower, upper, layers, first, quick, Deadline(60), notes)
    assert len(notes) == 2 and all(new >= old for new, old in zip(bounds, first))
    y = chain.forward(sample_box(seed, lower, upper, 20_000)[0]).numpy()
    for clause, bound in zip(clauses, bounds):
        # the clause's violation margin is max_r (A_r·y - b_r); its bound lies below every sample's
        assert bound <= float((y @ clause.A.T - clause.b).max(axis=1).min()) + 1e-9


def test_longer_intermediate_runs_prove_what_the_first_run_leaves_open(tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain, lower, upper = _deep_problem(7, "tanh")
    engine = BoundEngine(chain.graph)
    verify_settings = VerifySettings(timeout=30)
    one = torch.ones(1, 1, dtype=torch.float64)
    layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=verify_settings.intermediate_alpha_steps)
    first = float(engine.output_bounds(lower, upper, one, method="alpha-crown", alpha_steps=verify_settings.alpha_steps,
                                       layers=layers).lower)
    for steps in verify_settings.sshaped_alpha_escalation:
        layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=steps, prior=layers)
    longer = float(engine.output_bounds(lower, upper, one, method="alpha-crown", alpha_steps=verify_settings.alpha_steps,
                                        layers=layers).lower)
    assert longer > first + 0.02
    threshold = (first + longer) / 2
    # the oracle: the property y > threshold holds on 20,000 samples refined by gradient descent
    assert _sampled_minimum(chain, lower, upper, torch.ones(1, dtype=torch.float64), 7)[0] > threshold
    box = Box(lower[0].numpy(), upper[0].numpy())
    spec = Spec(N_IN, 1, (Region(box, (Clause(np.array([[1.0]]), np.array([threshold])),)),))
    network = load_network(save_onnx(chain, tmp_path / "deep_tanh.onnx"))
    proven = verify(network, spec, verify_settings)
    assert (proven.status, proven.decided_by) == ("unsat", "alpha-crown")
    assert any("α-CROWN on the intermediate bounds" in note for note in proven.notes)
    # without the longer runs the first bound leaves the clause to activation splitting
    plain = verify(network, spec, dataclasses.replace(verify_settings, sshaped_alpha_escalation=()))
    assert plain.decided_by != "alpha-crown" and plain.status != "sat"
