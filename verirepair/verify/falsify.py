"""Counterexample search: uniform sampling, then projected gradient descent on the margin."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..bounds import BoundGraph
from ..spec import Box
from .deadline import Deadline
from .objective import RegionRows, box_tensors
from .result import Counterexample
from .settings import VerifySettings

# Negative slope of the leaky ReLUs that the second descent differentiates (any point it reaches is
# judged on the real network, then in onnxruntime).
SURROGATE_RELU_SLOPE = 0.01
# The second descent runs when the first got stuck, or when the first took at most this share of
# the time left (a large dense CNN pays ~25 s per descent, a 60-second unsat instance cannot).
SURROGATE_SHARE = 0.05


def _best_points(graph: BoundGraph, rows: RegionRows, x: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        margins = rows.margin(graph.forward(x))
    order = margins.argsort()[:count]
    return x[order], margins[order]


def candidate_points(graph: BoundGraph, rows: RegionRows, box: Box, settings: VerifySettings,
                     deadline: Deadline, generator: torch.Generator) -> np.ndarray:
    """Points of ``box`` whose float64 margin is <= 0, most violating first (maybe none).

    The caller replays them in onnxruntime; nothing here is trusted as a counterexample.
    """
    device = rows.A.device
    lower, upper = (t[0] for t in box_tensors(box, device))
    uniform = lower + torch.rand(settings.random_samples, lower.numel(), dtype=torch.float64,
                                 generator=generator).to(device) * (upper - lower)
    center = ((lower + upper) / 2).unsqueeze(0)
    starts, margins = _best_points(graph, rows, torch.cat([center, uniform]), settings.pgd_restarts)
    if rows.empty_clause or bool((margins <= 0).any()):
        return starts[margins <= 0].cpu().numpy() if not rows.empty_clause else center.cpu().numpy()
    started = time.monotonic()
    x = descend(graph, rows, starts, lower, upper, settings.pgd_steps, deadline)
    found, margins = _best_points(graph, rows, x, settings.pgd_restarts)
    stuck = bool((x == starts).all(dim=1).float().mean() >= 0.5)
    cheap = time.monotonic() - started <= SURROGATE_SHARE * deadline.remaining()
    # input split probes every box it bounds for counterexamples
    searched_later = lower.numel() <= settings.input_split_max_dims and not settings.surrogate_before_input_split
    if not bool((margins <= 0).any()) and graph.has_relu and (stuck or (cheap and not searched_later)):
        # Where every ReLU of a layer is off on most of the box, the margin's gradient is zero and
        # the descent above never moves; the same descent on leaky ReLUs does (collins_rul_cnn's
        # if-then properties: output constant on 20,000 samples, violated where tools found it).
        # It also reaches violations the plain descent misses on deep MLPs (mnist_fc 256x6
        # prop_1 at eps 0.05), so it runs whenever it is cheap too, unless input split follows.
        x = descend(graph, rows, starts, lower, upper, settings.pgd_steps, deadline, SURROGATE_RELU_SLOPE)
        found, margins = _best_points(graph, rows, x, settings.pgd_restarts)
    return found[margins <= 0].cpu().numpy()


def descend(graph: BoundGraph, rows: RegionRows, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
            steps: int, deadline: Deadline, relu_negative_slope: float = 0.0) -> torch.Tensor:
    """Projected signed-gradient descent on the margin; ``lower``/``upper`` are one box or one per
    point. ``relu_negative_slope`` > 0 descends on the leaky-ReLU surrogate (`BoundGraph.forward`)."""
    width = upper - lower
    x = x.clone()
    for step in range(steps):
        if deadline.expired():
            break
        x.requires_grad_(True)
        margin = rows.margin(graph.forward(x, relu_negative_slope))
        (gradient,) = torch.autograd.grad(margin.sum(), x)
        size = 0.1 * (1 - step / steps) + 0.002
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - size * width * gradient.sign(), lower), upper)
    return x.detach()


def replay_most_violating(graph: BoundGraph, points: torch.Tensor, margin_of: Callable[[torch.Tensor], torch.Tensor],
                          confirm: Callable[[np.ndarray], Counterexample | None], count: int) -> Counterexample | None:
    """Replay (``confirm``: onnxruntime) up to ``count`` of ``points`` whose float64 margin is <= 0,
    most violating first; nothing computed here is trusted as a counterexample."""
    if points.shape[0] == 0:
        return None
    with torch.no_grad():
        margins = margin_of(graph.forward(points))
    for index in margins.argsort()[:count].tolist():
        if margins[index] > 0:
            break
        found = confirm(points[index].cpu().numpy())
        if found is not None:
            return found
    return None
