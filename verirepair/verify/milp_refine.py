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

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundGraph, LayerBounds
from ..milp import MilpSettings, encode_graph, solve_with_fallback
from ..spec import Box
from .deadline import Deadline
from .objective import box_tensors
from .settings import VerifySettings

# A solver's dual bound is exact only up to its optimality tolerances (dual feasibility 1e-7 times
# the ranges of at most a few thousand variables of width <= ~100): far below 1e-4. Widening every
# refined bound by this much (plus the same relative amount) keeps it sound; it is 1e-4 of a bound
# that is typically 0.1 to 10 wide, so it costs nothing a verdict could notice.
REFINE_MARGIN = 1e-4

# Bound solves: only the proven bound matters, and it needs no tighter gap than this to help.
BOUND_SETTINGS = MilpSettings(feasibility_tolerance=1e-9, integrality_tolerance=1e-9, mip_rel_gap=1e-4,
                              mip_abs_gap=1e-6, bound_only=True)


def milp_refined_layers(engine: BoundEngine, box: Box, layers: LayerBounds, settings: VerifySettings,
                        deadline: Deadline) -> LayerBounds:
    """``layers`` with the unstable pre-activations of hidden layers 2 … 1 + ``milp_refine_layers``
    bounded by MILP, and every later layer re-bounded by α-CROWN under them.

    Stops at ``deadline`` with what it has (every intermediate state is sound). Needs a ReLU
    network (`BoundGraph.is_relu_network`) and a batch of one box.
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
        refined = _refined_layer(graph, j, box, pre[:j], pre[j], settings, deadline)
        known = list(layers.pre_activation)
        known[j] = tuple(torch.as_tensor(b, dtype=dtype, device=device).unsqueeze(0) for b in refined)  # type: ignore[assignment]
        with torch.no_grad():
            layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=settings.intermediate_alpha_steps,
                                         prior=LayerBounds(tuple(known)))
    return layers


def _refined_layer(graph: BoundGraph, position: int, box: Box, before: list[tuple[np.ndarray, np.ndarray]],
                   current: tuple[np.ndarray, np.ndarray], settings: VerifySettings,
                   deadline: Deadline) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the input of ``graph``'s non-linear node number ``position``: ``current``
    tightened, for its unstable entries, by MILP.

    The widest intervals go first, so that a deadline cuts off the least useful solves.
    """
    lower, upper = current[0].astype(np.float64).copy(), current[1].astype(np.float64).copy()
    unstable = np.flatnonzero((lower < 0) & (upper > 0))
    order = unstable[np.argsort(-(upper[unstable] - lower[unstable]), kind="stable")]
    tasks = [(int(i), sign) for i in order for sign in (1.0, -1.0)]

    def proven_minimum(task: tuple[int, float]) -> float | None:
        index, sign = task
        if deadline.expired():
            return None
        model, _, outputs = encode_graph(graph, box, before, None, margin=0.0, stop_at=position)
        objective = np.zeros(outputs.size)
        objective[index] = sign
        model.set_objective(outputs, objective)
        limit = min(settings.milp_refine_neuron_seconds, deadline.remaining())
        result = solve_with_fallback(model, limit, settings.milp_solver, BOUND_SETTINGS)
        if result.status == "infeasible":  # only a margin-free rounding artefact could do this
            return None
        return result.best_bound

    workers = settings.leaf_milp_workers or max(1, torch.get_num_threads())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milp-refine") as pool:
        for (index, sign), bound in zip(tasks, pool.map(proven_minimum, tasks)):
            if bound is None or not np.isfinite(bound):
                continue
            widened = bound - REFINE_MARGIN * (1.0 + abs(bound))
            if sign > 0:
                lower[index] = max(lower[index], widened)
            else:
                upper[index] = min(upper[index], -widened)
    return lower, upper
