"""MILP-refined intermediate bounds against dense sampling and exact extremes.

Sound: every sampled pre-activation of every layer lies inside the refined bounds, and they are
never wider than the α-CROWN bounds they start from. Tight: on two-input networks the refined
bounds of each neuron the MILP bounded match the true extremes of a fine grid (up to the grid's
Lipschitz slack), so what the pipeline uses is the exact MILP's answer, not a relaxation. With the
early stop, every neuron whose true extremes lie clearly on one side of zero is made stable.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import forward_layers, random_box, random_mlp, sample_box

from verirepair.bounds import BoundEngine
from verirepair.spec import Box
from verirepair.verify import VerifySettings
from verirepair.verify.deadline import Deadline
from verirepair.verify.milp_refine import BOUND_SETTINGS, REFINE_MARGIN, STABLE_AT, milp_refined_layers

# Float64 evaluation of the sampled points and of the bounds differ by ~1e-14; 1e-9 separates that
# rounding from a real soundness failure.
TOLERANCE = 1e-9
SETTINGS = VerifySettings(milp_refine_layers=3, milp_refine_neuron_seconds=30.0, intermediate_alpha_steps=5)
EXACT = dataclasses.replace(SETTINGS, milp_refine_early_stop=False)


def _refined(chain, lower: torch.Tensor, upper: torch.Tensor, refine_settings: VerifySettings = SETTINGS):
    engine = BoundEngine(chain.graph)
    start = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=5)
    box = Box(lower[0].numpy(), upper[0].numpy())
    return start, milp_refined_layers(engine, box, start, refine_settings, Deadline(120.0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_in=st.integers(2, 6), depth=st.integers(2, 4))
def test_refined_bounds_hold_at_every_sampled_point_and_never_widen(seed: int, n_in: int, depth: int) -> None:
    rng = np.random.default_rng(seed)
    chain = random_mlp(seed, n_in, [int(h) for h in rng.integers(4, 9, size=depth)], 3)
    lower, upper = random_box(seed, n_in, width=1.5)
    start, refined = _refined(chain, lower, upper)
    points = sample_box(seed, lower, upper, 3000)[0]
    _, pre_activations = forward_layers(chain, points)
    for k, (z, (l0, u0), (l, u)) in enumerate(zip(pre_activations, start.pre_activation, refined.pre_activation)):
        assert torch.all(l[0] <= z.min(dim=0).values + TOLERANCE), f"layer {k}: a sampled value lies below the refined bound"
        assert torch.all(z.max(dim=0).values <= u[0] + TOLERANCE), f"layer {k}: a sampled value lies above the refined bound"
        assert torch.all(l >= l0) and torch.all(u <= u0), f"layer {k}: refining widened a bound"


def _grid_extremes(chain, lower: torch.Tensor, upper: torch.Tensor, steps: int = 401):
    """Per layer k >= 1: the minimum and maximum of each pre-activation over a fine grid of the
    two-input box, and the Lipschitz slack within which the true extremes lie."""
    axes = [torch.linspace(float(lower[0, d]), float(upper[0, d]), steps, dtype=torch.float64) for d in range(2)]
    _, pre_activations = forward_layers(chain, torch.cartesian_prod(*axes))
    half_step = (upper[0] - lower[0]) / (steps - 1) / 2
    weights = [layer.weight.abs() for layer in chain.layers[::2]]
    reach = weights[0]  # |W| product: how fast each pre-activation can change per input
    extremes = []
    for k in range(1, len(pre_activations)):
        reach = weights[k] @ reach
        extremes.append((pre_activations[k].min(dim=0).values, pre_activations[k].max(dim=0).values, reach @ half_step))
    return extremes


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_refined_neurons_reach_the_true_extremes_on_a_fine_grid(seed: int) -> None:
    chain = random_mlp(seed, 2, [8, 8, 8], 2, scale=2.0)
    lower, upper = random_box(seed, 2, width=1.5)
    start, refined = _refined(chain, lower, upper, EXACT)
    grid_min, grid_max, slack = _grid_extremes(chain, lower, upper)[0]  # layer 2
    l0, u0 = start.pre_activation[1][0][0], start.pre_activation[1][1][0]
    l, u = refined.pre_activation[1][0][0], refined.pre_activation[1][1][0]
    solver_slack = (2 * REFINE_MARGIN + BOUND_SETTINGS.mip_rel_gap) * (1 + torch.maximum(grid_min.abs(), grid_max.abs()))
    # only layer 2's neurons are bounded against the very pre-bounds they started with
    unstable = ((l0 < 0) & (u0 > 0)).nonzero().flatten().tolist()
    for i in unstable:
        assert grid_min[i] - slack[i] - solver_slack[i] <= l[i] <= grid_min[i] + TOLERANCE, (i, float(l[i]), float(grid_min[i]))
        assert grid_max[i] - TOLERANCE <= u[i] <= grid_max[i] + slack[i] + solver_slack[i], (i, float(u[i]), float(grid_max[i]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_early_stop_makes_every_clearly_stable_neuron_stable(seed: int) -> None:
    """A refined layer's neuron that α-CROWN left unstable but whose true extremes keep one sign,
    clear of zero by more than the grid's slack and the solver's margins, is stable after
    refinement (each layer's MILP is exact over sound pre-bounds, so its sign is decidable)."""
    chain = random_mlp(seed, 2, [8, 8, 8, 8], 2, scale=2.0)
    lower, upper = random_box(seed, 2, width=1.5)
    start, refined = _refined(chain, lower, upper)
    for k, (grid_min, grid_max, slack) in enumerate(_grid_extremes(chain, lower, upper), start=1):
        l0, u0 = start.pre_activation[k][0][0], start.pre_activation[k][1][0]
        l, u = refined.pre_activation[k][0][0], refined.pre_activation[k][1][0]
        clear = slack + 10 * STABLE_AT * (1 + torch.maximum(grid_min.abs(), grid_max.abs()))
        unstable = (l0 < 0) & (u0 > 0)
        for i in (unstable & (grid_min > clear)).nonzero().flatten().tolist():
            assert l[i] >= 0.0, (k, i, float(l[i]), float(grid_min[i]))
        for i in (unstable & (grid_max < -clear)).nonzero().flatten().tolist():
            assert u[i] <= 0.0, (k, i, float(u[i]), float(grid_max[i]))
        assert torch.all(l <= grid_min + TOLERANCE) and torch.all(grid_max - TOLERANCE <= u)


def test_refinement_stops_at_its_deadline_with_sound_bounds() -> None:
    chain = random_mlp(7, 6, [30, 30, 30], 3, scale=2.5)
    lower, upper = random_box(7, 6, width=2.0)
    engine = BoundEngine(chain.graph)
    start = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=5)
    box = Box(lower[0].numpy(), upper[0].numpy())
    deadline = Deadline(0.3)
    refined = milp_refined_layers(engine, box, start, dataclasses.replace(SETTINGS, milp_refine_neuron_seconds=0.05),
                                  deadline)
    assert deadline.elapsed() < 10.0  # one α-CROWN pass and the solves already started, at most
    points = sample_box(7, lower, upper, 2000)[0]
    _, pre_activations = forward_layers(chain, points)
    for z, (l, u) in zip(pre_activations, refined.pre_activation):
        assert torch.all(l[0] <= z.min(dim=0).values + TOLERANCE) and torch.all(z.max(dim=0).values <= u[0] + TOLERANCE)
