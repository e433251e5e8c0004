"""ReLU-split bounds (β-CROWN style) against dense sampling of each split domain.

A domain's bound must lie below the objective at every box point that satisfies the domain's
split signs, for *any* slopes α in [0, 1] and multipliers β >= 0 the optimiser may visit; the
optimised bound must also never be worse than the same domain bounded without optimisation.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import forward_layers, random_box, random_mlp, sample_box

from verirepair.bounds import BoundEngine
from verirepair.verify.relu_split import SplitNetwork, bound_domains

F64 = torch.float64


def _case(seed: int, n_domains: int):
    rng = np.random.default_rng(seed)
    chain = random_mlp(seed, 3, [6, 5], 2)
    lower, upper = random_box(seed, 3, width=1.5)
    layers = BoundEngine(chain).layer_bounds(lower, upper, "crown")
    pre = [(l[0], u[0]) for l, u in layers.pre_activation]
    net = SplitNetwork.of(chain, pre)
    splits = []
    for l, u in pre:
        unstable = ((l < 0) & (u > 0)).numpy()
        signs = rng.choice([-1, 0, 1], size=(n_domains, l.numel())) * unstable
        splits.append(torch.tensor(signs, dtype=torch.int8))
    objective = torch.tensor(rng.normal(size=2), dtype=F64)
    return chain, lower, upper, net, splits, objective, rng


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.sampled_from([0, 1, 8]))
def test_split_domain_bounds_hold_on_every_sampled_point_of_the_domain(seed: int, steps: int) -> None:
    n_domains = 6
    chain, lower, upper, net, splits, objective, rng = _case(seed, n_domains)
    alpha = [torch.tensor(rng.uniform(0, 1, size=s.shape), dtype=torch.float32) for s in splits]
    beta = [torch.tensor(rng.uniform(0, 2, size=s.shape), dtype=torch.float32) for s in splits]
    result = bound_domains(net, objective, 0.25, lower[0], upper[0], splits, alpha, beta, steps)
    x = sample_box(seed, lower, upper, 4000)[0]
    y, pre_activations = forward_layers(chain, x)
    value = y @ objective + 0.25
    checked = 0
    for d in range(n_domains):
        inside = torch.ones(x.shape[0], dtype=torch.bool)
        for signs, z in zip(splits, pre_activations):
            s = signs[d].to(F64)
            inside &= ((s * z) >= 0).all(dim=1)
        if bool(inside.any()):
            checked += 1
            assert float(result.lower[d]) <= float(value[inside].min()) + 1e-9
    assert result.lower.shape == (n_domains,)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_optimising_alpha_and_beta_never_loosens_the_bound(seed: int) -> None:
    chain, lower, upper, net, splits, objective, _ = _case(seed, 4)
    start_alpha = [torch.full(s.shape, 0.5, dtype=torch.float32) for s in splits]
    start_beta = [torch.zeros(s.shape, dtype=torch.float32) for s in splits]
    plain = bound_domains(net, objective, 0.0, lower[0], upper[0], splits, start_alpha, start_beta, 1)
    optimised = bound_domains(net, objective, 0.0, lower[0], upper[0], splits, start_alpha, start_beta, 10)
    assert bool((optimised.lower >= plain.lower - 1e-12).all())
