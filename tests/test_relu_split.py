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
from verirepair.verify.relu_split import SplitNetwork, bound_domains, tighten_intermediate

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


def _root_bounds(net: SplitNetwork, n_domains: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return ([l.expand(n_domains, -1) for l in net.pre_lower], [u.expand(n_domains, -1) for u in net.pre_upper])


def _inside(splits: list[torch.Tensor], pre_activations: list[torch.Tensor], d: int) -> torch.Tensor:
    """Which sampled points satisfy domain ``d``'s split signs."""
    inside = torch.ones(pre_activations[0].shape[0], dtype=torch.bool)
    for signs, z in zip(splits, pre_activations):
        inside &= ((signs[d].to(F64) * z) >= 0).all(dim=1)
    return inside


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.sampled_from([0, 1, 8]), tightened=st.booleans())
def test_split_domain_bounds_hold_on_every_sampled_point_of_the_domain(seed: int, steps: int, tightened: bool) -> None:
    n_domains = 6
    chain, lower, upper, net, splits, objective, rng = _case(seed, n_domains)
    alpha = [torch.tensor(rng.uniform(0, 1, size=s.shape), dtype=torch.float32) for s in splits]
    beta = [torch.tensor(rng.uniform(0, 2, size=s.shape), dtype=torch.float32) for s in splits]
    pre_lower, pre_upper = _root_bounds(net, n_domains)
    if tightened:
        pre_lower, pre_upper, _ = tighten_intermediate(net, lower[0], upper[0], splits, pre_lower, pre_upper)
    result = bound_domains(net, objective, 0.25, lower[0], upper[0], splits, pre_lower, pre_upper, alpha, beta, steps)
    x = sample_box(seed, lower, upper, 4000)[0]
    y, pre_activations = forward_layers(chain, x)
    value = y @ objective + 0.25
    checked = 0
    for d in range(n_domains):
        inside = _inside(splits, pre_activations, d)
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
    pre_lower, pre_upper = _root_bounds(net, 4)
    plain = bound_domains(net, objective, 0.0, lower[0], upper[0], splits, pre_lower, pre_upper, start_alpha, start_beta, 1)
    optimised = bound_domains(net, objective, 0.0, lower[0], upper[0], splits, pre_lower, pre_upper, start_alpha,
                              start_beta, 10)
    assert bool((optimised.lower >= plain.lower - 1e-12).all())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_tightened_intermediate_bounds_hold_on_the_domain_and_only_empty_domains_are_closed(seed: int) -> None:
    """Re-bounded under a domain's splits, every ReLU input stays within its new bounds at every
    sampled point of the domain; the bounds never widen; a domain flagged empty has no point."""
    n_domains = 8
    chain, lower, upper, net, splits, _, _ = _case(seed, n_domains)
    root_lower, root_upper = _root_bounds(net, n_domains)
    pre_lower, pre_upper, empty = tighten_intermediate(net, lower[0], upper[0], splits, root_lower, root_upper)
    for k in range(len(splits)):
        assert bool((pre_lower[k] >= root_lower[k]).all()) and bool((pre_upper[k] <= root_upper[k]).all())
    _, pre_activations = forward_layers(chain, sample_box(seed, lower, upper, 4000)[0])
    for d in range(n_domains):
        inside = _inside(splits, pre_activations, d)
        if bool(empty[d]):
            assert not bool(inside.any())
            continue
        for k, z in enumerate(pre_activations):
            assert bool((z[inside] >= pre_lower[k][d] - 1e-9).all()) and bool((z[inside] <= pre_upper[k][d] + 1e-9).all())


def test_splits_tighten_the_bounds_of_later_layers() -> None:
    """The point of re-bounding: on most random domains some later neuron's interval shrinks."""
    tightened = 0
    for seed in range(20):
        _, lower, upper, net, splits, _, _ = _case(seed, 4)
        root_lower, root_upper = _root_bounds(net, 4)
        pre_lower, pre_upper, _ = tighten_intermediate(net, lower[0], upper[0], splits, root_lower, root_upper)
        tightened += any(bool((pre_lower[k] > root_lower[k] + 1e-9).any() | (pre_upper[k] < root_upper[k] - 1e-9).any())
                         for k in range(1, len(splits)))
    assert tightened >= 10


def test_re_bounding_in_chunks_gives_the_same_bounds(monkeypatch) -> None:
    from verirepair.verify import relu_split

    _, lower, upper, net, splits, _, _ = _case(3, 9)
    root_lower, root_upper = _root_bounds(net, 9)
    whole = tighten_intermediate(net, lower[0], upper[0], splits, root_lower, root_upper)
    monkeypatch.setattr(relu_split, "TIGHTEN_CHUNK_BYTES", 1.0)  # one domain per chunk
    chunked = tighten_intermediate(net, lower[0], upper[0], splits, root_lower, root_upper)
    for a, b in zip(whole[0] + whole[1] + [whole[2]], chunked[0] + chunked[1] + [chunked[2]]):
        assert torch.equal(a, b)
