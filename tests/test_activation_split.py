"""Activation-split branch and bound (sigmoid/tanh neurons) against dense sampling.

* Every domain's bound lies below the objective at every sampled box point whose pre-activations
  fall inside the domain's intervals (the domains a search creates, several levels deep).
* Where sampling and gradient descent find a violation, the search never answers "proven", and
  mostly finds a counterexample itself (checked here in float64); a threshold halfway between
  α-CROWN's bound and the sampled minimum, which α-CROWN alone cannot prove, it mostly proves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import forward_layers, random_box, random_mlp, sample_box

from verirepair.bounds import BoundEngine
from verirepair.verify import Deadline
from verirepair.verify.activation_split import ActivationSplitter, activation_split_search
from verirepair.verify.result import Counterexample
from verirepair.verify.settings import VerifySettings

F64 = torch.float64
N_IN = 12  # above the input-split limit: the case this search is for


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
    engine = BoundEngine(chain)
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
    engine = BoundEngine(chain)
    layers = engine.layer_bounds(lower, upper, "alpha-crown")
    pre = [(l[0], u[0]) for l, u in layers.pre_activation]

    def margin_of(y: torch.Tensor) -> torch.Tensor:
        return y @ objective + offset

    def confirm(x: np.ndarray) -> Counterexample | None:
        y = chain.forward(torch.tensor(x, dtype=F64).reshape(1, -1))[0]
        return Counterexample(x, y.numpy()) if float(y @ objective) + offset <= 0 else None

    return activation_split_search(engine, objective, offset, lower, upper, pre, VerifySettings(),
                                   Deadline(seconds), margin_of, confirm)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_search_proves_what_alpha_crown_alone_cannot_and_finds_violations(kind: str) -> None:
    proven_beyond_alpha = violations_found = 0
    for seed in range(4):
        chain, lower, upper, objective = _problem(seed, kind)
        minimum, _ = _sampled_minimum(chain, lower, upper, objective, seed)
        engine = BoundEngine(chain)
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
    # unloaded: 4 and 3 (sigmoid), 3 and 2 (tanh) of 4; wall-clock limits leave room for a loaded CI
    assert proven_beyond_alpha >= 2 and violations_found >= 1


def test_out_of_memory_halves_the_batch_and_the_search_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device memory cap hit while bounding a batch of children: the batch is halved and the
    frontier kept, so the proof still comes, bounded in batches below the failing size."""
    chain, lower, upper, objective = _problem(0, "sigmoid")
    minimum, _ = _sampled_minimum(chain, lower, upper, objective, 0)
    alpha = float(BoundEngine(chain).output_bounds(lower, upper, objective.reshape(1, -1), method="alpha-crown", alpha_steps=30).lower)
    real_bound = ActivationSplitter.bound
    sizes: list[int] = []
    refused: list[int] = []

    def capped(self, lower_bounds, upper_bounds):  # type: ignore[no-untyped-def]
        if lower_bounds[0].shape[0] > 8:
            refused.append(lower_bounds[0].shape[0])
            raise torch.OutOfMemoryError("simulated device memory cap")
        sizes.append(lower_bounds[0].shape[0])
        return real_bound(self, lower_bounds, upper_bounds)

    monkeypatch.setattr(ActivationSplitter, "bound", capped)
    outcome = _search(chain, lower, upper, objective, -(alpha + 0.8 * (minimum - alpha)), 10.0)
    assert outcome.status == "proven"
    assert refused and max(sizes) <= 8 and len(sizes) > 2
