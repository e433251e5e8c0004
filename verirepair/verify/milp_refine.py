"""Tighter intermediate bounds for ReLU MLPs with many inputs, from exact MILPs of the layers before.

On deep networks CROWN's relaxation error grows with every layer: on eran's 9x200 net the last
hidden layers are (almost) all unstable and the output bound of the hard instances is −13 to −42.
The first hidden layers still have few unstable neurons, so the exact MILP of the network up to
layer j (one binary per unstable neuron before it) is small, and its proven minimum and maximum of
each unstable pre-activation of layer j are much tighter than any linear relaxation. α-CROWN then
bounds the later layers again under these bounds (on eran 9x200 image 225: −13.2 → −3.8 after
refining the second and third hidden layers).

A refined bound is the solver's *proven* bound (its dual bound, valid even when it stops early),
widened by `REFINE_MARGIN`, intersected with the bound it replaces; so it is never looser.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundGraph, LayerBounds
from ..bounds.engine import IntermediateSlopes
from ..milp import MilpSettings, encode_graph, solve_with_fallback
from ..spec import Box
from .deadline import Deadline
from .objective import box_tensors
from .settings import VerifySettings

# A solver's dual bound is exact only up to its optimality tolerances, which act on every row of
# the encoding and grow with its magnitudes; no a-priori bound on that error is derived here. Every
# refined bound is widened by this much (plus the same relative amount) against the usual case,
# and a verdict that rests on refined bounds is reported as resting on the solver (`trust:
# solver`), as the MILP search's claims are.
REFINE_MARGIN = 1e-4
# With `VerifySettings.milp_refine_early_stop`, a side's solve stops once its proven bound clears
# this: the widened bound is then still >= 0, so the neuron counts as stable.
STABLE_AT = 2 * REFINE_MARGIN

BOUND_SETTINGS = MilpSettings(feasibility_tolerance=1e-9, integrality_tolerance=1e-9, mip_rel_gap=1e-4,
                              mip_abs_gap=1e-6, bound_only=True)


@dataclass(frozen=True)
class SolvedBound:
    """A bound of a ReLU input (``layer``: its position in `BoundGraph.nonlinear`) that a MILP
    solver proved: ``value`` is a lower bound (``upper`` False) or an upper bound of it on the box."""

    layer: int
    neuron: int
    upper: bool
    value: float
    solver: str


def milp_refined_layers(engine: BoundEngine, box: Box, layers: LayerBounds, settings: VerifySettings,
                        deadline: Deadline, solved: list[SolvedBound] | None = None,
                        kept_slopes: dict[int, list[IntermediateSlopes]] | None = None) -> LayerBounds:
    """``layers`` with the unstable pre-activations of hidden layers 2 … 1 + ``milp_refine_layers``
    bounded by MILP, and every later layer re-bounded by α-CROWN under them.

    Stops at ``deadline`` with what it has (every intermediate state is sound). Needs a ReLU
    network (`BoundGraph.is_relu_network`) and a batch of one box. For a certificate, ``solved``
    gets every bound a solver tightened and ``kept_slopes`` the slopes of the α-CROWN bounds
    (see `BoundEngine.layer_bounds`).
    """
    graph = engine.graph
    if not graph.is_relu_network:
        raise ValueError("MILP-refined bounds need a ReLU network")
    device, dtype = layers.pre_activation[0][0].device, layers.pre_activation[0][0].dtype
    lower, upper = box_tensors(box, device)
    last = min(1 + settings.milp_refine_layers, len(layers.pre_activation))
    for j in range(1, last):
        progress.search(f"milp-refine layer {j + 1}")
        if deadline.expired():
            break
        pre = [(l[0].cpu().numpy(), u[0].cpu().numpy()) for l, u in layers.pre_activation]
        refined = _refined_layer(graph, j, box, pre[:j], pre[j], settings, deadline, solved)
        known = list(layers.pre_activation)
        known[j] = tuple(torch.as_tensor(b, dtype=dtype, device=device).unsqueeze(0) for b in refined)  # type: ignore[assignment]
        with torch.no_grad():
            layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=settings.intermediate_alpha_steps,
                                         prior=LayerBounds(tuple(known)), kept_slopes=kept_slopes)
    return layers


def _refined_layer(graph: BoundGraph, position: int, box: Box, before: list[tuple[np.ndarray, np.ndarray]],
                   current: tuple[np.ndarray, np.ndarray], settings: VerifySettings,
                   deadline: Deadline, solved: list[SolvedBound] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the input of ``graph``'s non-linear node number ``position``: ``current``
    tightened, for its unstable entries, by MILP.

    Neurons go in the order of their triangle relaxation's largest gap, ``-l·u/(u-l)``, so that a
    deadline cuts off the least useful solves. Per neuron the side nearer to zero goes first; with
    ``milp_refine_early_stop`` each side's solve stops as soon as it decides the neuron's sign (its
    bound clears zero: stable, and the other side is skipped; or a point beyond zero is found:
    unstable on that side), which is what the later bounds gain most from. ``solved`` gets the
    bounds a solver tightened.
    """
    lower, upper = current[0].astype(np.float64).copy(), current[1].astype(np.float64).copy()
    unstable = np.flatnonzero((lower < 0) & (upper > 0))
    gap = -lower[unstable] * upper[unstable] / (upper[unstable] - lower[unstable])
    order = unstable[np.argsort(-gap, kind="stable")]
    stops = (dataclasses.replace(BOUND_SETTINGS, stop_at_bound=STABLE_AT, stop_below_objective=0.0)
             if settings.milp_refine_early_stop else BOUND_SETTINGS)

    def proven_minimum(index: int, sign: float) -> tuple[float, str] | None:
        """A proven lower bound of ``sign`` times the neuron's pre-activation and the solver that
        proved it, or None."""
        if deadline.expired():
            return None
        model, _, outputs = encode_graph(graph, box, before, None, margin=0.0, stop_at=position)
        objective = np.zeros(outputs.size)
        objective[index] = sign
        model.set_objective(outputs, objective)
        limit = min(settings.milp_refine_neuron_seconds, deadline.remaining())
        result = solve_with_fallback(model, limit, settings.milp_solver, stops)
        if result.status == "infeasible" or result.best_bound is None or not np.isfinite(result.best_bound):
            return None  # infeasible: only a margin-free rounding artefact could do this
        return result.best_bound - REFINE_MARGIN * (1.0 + abs(result.best_bound)), result.solver

    def refined(index: int) -> dict[float, tuple[float, str] | None]:
        """The neuron's proven lower bound (key 1.0) and negated upper bound (key -1.0), with their
        solvers, None where not bounded."""
        sides = (1.0, -1.0) if -lower[index] <= upper[index] else (-1.0, 1.0)
        found: dict[float, tuple[float, str] | None] = {}
        for sign in sides:
            found[sign] = proven_minimum(index, sign)
            if settings.milp_refine_early_stop and found[sign] is not None and found[sign][0] >= 0.0:
                break  # stable: the other side cannot help
        return found

    workers = settings.leaf_milp_workers or max(1, torch.get_num_threads())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milp-refine") as pool:
        for index, found in zip(order.tolist(), pool.map(refined, order.tolist())):
            for sign, bounds in ((1.0, lower), (-1.0, upper)):
                proven = found.get(sign)
                if proven is None or not proven[0] > sign * bounds[index]:  # no tighter than the bound it has
                    continue
                bounds[index] = sign * proven[0]
                if solved is not None:
                    solved.append(SolvedBound(position, index, sign < 0, float(bounds[index]), proven[1]))
    return lower, upper
