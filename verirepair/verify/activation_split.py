"""Activation-split branch and bound for networks with S-shaped activations (sigmoid, tanh).

Without piecewise-linear activations there is no exact MILP to fall back on, so where α-CROWN on
the whole box is not enough, the remaining time goes to splitting neurons instead of inputs (a
784-pixel box cannot be split usefully). A domain is the region's box plus, for some sigmoid or
tanh neurons, a narrowed interval of their input ``z_j``: a split cuts the domain's interval at its
midpoint ``s`` into ``z_j <= s`` and ``z_j >= s``, and the two children cover the parent, so
proving every leaf proves the region.

Soundness of a domain's bound: the domain's intervals are the prior of every layer's bounds
(`BoundEngine.layer_bounds(prior=...)`). Each layer's CROWN bounds hold on the whole box and the
narrowed intervals hold on the domain by its definition, so their intersection holds on the domain,
and so do the relaxations built on it and the α-CROWN output bound. A domain that no input point
reaches gets a bound too; it is simply not needed.

Branching: the neuron whose interval end points the domain's CROWN bound is most sensitive to
(gradient times half the width, for the weaker of the two children).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundSShaped, LayerBounds
from .deadline import Deadline, paced_batch
from .falsify import replay_most_violating
from .objective import still_open
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

Tensor = torch.Tensor
# α-CROWN steps per batch of domains (the root already had the full optimisation).
OPTIMISE_STEPS = 10
BATCH_START = 8
# Intervals narrower than this are not split again (the relaxation is then nearly exact).
MIN_SPLIT_WIDTH = 1e-6
# Memory for open domains (two float64 bounds per neuron of every non-affine layer); beyond it the
# search gives up, keeping an instance under ~4 GB.
MAX_FRONTIER_BYTES = 1.5e9


@dataclass
class Domains:
    """A batch of domains: per non-affine layer the neurons' input intervals, and each bound."""

    lower: list[Tensor]  # per non-affine layer [D, n_k]
    upper: list[Tensor]
    bound: Tensor  # [D]

    @property
    def size(self) -> int:
        return int(self.bound.shape[0])

    def select(self, index: Tensor) -> Domains:
        return Domains([l[index] for l in self.lower], [u[index] for u in self.upper], self.bound[index])

    @staticmethod
    def join(parts: list[Domains]) -> Domains:
        layers = range(len(parts[0].lower))
        return Domains([torch.cat([p.lower[k] for p in parts]) for k in layers],
                       [torch.cat([p.upper[k] for p in parts]) for k in layers], torch.cat([p.bound for p in parts]))


class ActivationSplitter:
    """Bounds, branches and splits domains of one objective ``c·f(x) + offset`` over one box."""

    def __init__(self, engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor) -> None:
        self.engine = engine
        self.C = objective.reshape(1, -1)
        self.d = torch.tensor([offset], dtype=box_lower.dtype, device=box_lower.device)
        self.box_lower, self.box_upper = box_lower.reshape(1, -1), box_upper.reshape(1, -1)
        graph = engine.graph
        self.splittable = [isinstance(graph.nodes[i].op, BoundSShaped) for i in graph.nonlinear]

    def bound(self, lower: list[Tensor], upper: list[Tensor]) -> tuple[Domains, Tensor, Tensor]:
        """The domains with their layers' bounds tightened under their intervals, each domain's
        bound, its branching neuron (flat index over all layers; -1: none left) and the box
        vertex minimising its final linear bound (a counterexample candidate)."""
        count = lower[0].shape[0]
        box_lower, box_upper = self.box_lower.expand(count, -1), self.box_upper.expand(count, -1)
        prior = LayerBounds(tuple(zip(lower, upper)))
        with torch.no_grad():
            layers = self.engine.layer_bounds(box_lower, box_upper, "crown", prior=prior)
        result = self.engine.output_bounds(box_lower, box_upper, self.C, self.d, method="alpha-crown",
                                           alpha_steps=OPTIMISE_STEPS, layers=layers, interval_multipliers=True)
        assert result.coefficients is not None
        vertex = torch.where(result.coefficients[:, 0] > 0, box_lower, box_upper)
        domains = Domains([l for l, _ in layers.pre_activation], [u for _, u in layers.pre_activation],
                          result.lower[:, 0].detach())
        return domains, self._branching(domains), vertex

    def _branching(self, domains: Domains) -> Tensor:
        box_lower, box_upper = self.box_lower.expand(domains.size, -1), self.box_upper.expand(domains.size, -1)
        with torch.enable_grad():
            lower = [l.clone().requires_grad_(True) for l in domains.lower]
            upper = [u.clone().requires_grad_(True) for u in domains.upper]
            layers = LayerBounds(tuple(zip(lower, upper)))
            crown = self.engine.output_bounds(box_lower, box_upper, self.C, self.d, method="crown", layers=layers)
            grads = torch.autograd.grad(crown.lower.sum(), lower + upper, allow_unused=True)
        scores = []
        for k, (l, u) in enumerate(zip(domains.lower, domains.upper)):
            grad_l, grad_u = grads[k], grads[len(lower) + k]
            half = (u - l) / 2
            if not self.splittable[k] or grad_l is None or grad_u is None:
                scores.append(torch.full_like(l, -1.0))
                continue
            # raising l to the midpoint helps the upper child, lowering u the lower one: the weaker
            # child counts most, the total breaks ties (a neuron already exact gains nothing)
            up_child, low_child = grad_l.clamp(min=0) * half, (-grad_u).clamp(min=0) * half
            gain = torch.minimum(up_child, low_child) + 0.1 * (up_child + low_child)
            scores.append(torch.where(u - l > MIN_SPLIT_WIDTH, gain + 1e-9 * half, torch.full_like(l, -1.0)))
        value, index = torch.cat(scores, dim=1).max(dim=1)
        return torch.where(value >= 0, index, torch.full_like(index, -1))

    def children(self, domains: Domains, branch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Intervals of two children per domain: the branching neuron's lower and upper half."""
        sizes = [l.shape[1] for l in domains.lower]
        offsets = np.cumsum([0] + sizes)
        lower = [torch.cat([l, l]) for l in domains.lower]
        upper = [torch.cat([u, u]) for u in domains.upper]
        both = torch.cat([branch, branch])
        rows = torch.arange(both.shape[0], device=both.device)
        low_half = rows < domains.size
        for k in range(len(sizes)):
            inside = (both >= offsets[k]) & (both < offsets[k + 1])
            r, j = rows[inside], both[inside] - int(offsets[k])
            mid = (lower[k][r, j] + upper[k][r, j]) / 2
            upper[k][r[low_half[inside]], j[low_half[inside]]] = mid[low_half[inside]]
            lower[k][r[~low_half[inside]], j[~low_half[inside]]] = mid[~low_half[inside]]
        return lower, upper


def activation_split_search(engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                            pre_bounds: list[tuple[Tensor, Tensor]], settings: VerifySettings, deadline: Deadline,
                            margin_of: Callable[[Tensor], Tensor], confirm: Callable[[np.ndarray], Counterexample | None],
                            ) -> SearchOutcome:
    """Prove ``objective·f(x) + offset > 0`` on the box, or find a confirmed counterexample."""
    splitter = ActivationSplitter(engine, objective, offset, box_lower, box_upper)
    frontier, branch, vertex = splitter.bound([l.reshape(1, -1) for l, _ in pre_bounds],
                                              [u.reshape(1, -1) for _, u in pre_bounds])
    bounded_count, batch, largest, stuck = 1, BATCH_START, settings.split_batch, False
    bytes_per_domain = 16 * sum(l.shape[1] for l in frontier.lower)
    while True:
        found = replay_most_violating(engine.graph, vertex, margin_of, confirm, 4)
        if found is not None:
            return SearchOutcome("sat", found, bounded_count)
        unrefuted = still_open(frontier.bound, settings.decision_margin)
        stuck |= bool((unrefuted & (branch < 0)).any())
        keep = (unrefuted & (branch >= 0)).nonzero().flatten()
        frontier, branch = frontier.select(keep), branch[keep]
        if frontier.size == 0:
            return SearchOutcome("unknown" if stuck else "proven", None, bounded_count)
        progress.search("activation-split", frontier.size, frontier.bound.min)
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded_count)
        if frontier.size * bytes_per_domain > MAX_FRONTIER_BYTES:
            return SearchOutcome("unknown", None, bounded_count)
        started = time.monotonic()
        order = frontier.bound.argsort()
        take, rest = order[:batch], order[batch:]
        lower, upper = splitter.children(frontier.select(take), branch[take])
        try:
            children, child_branch, vertex = splitter.bound(lower, upper)
        except torch.OutOfMemoryError:  # the device's memory cap: the frontier is intact, retry smaller
            if batch <= 1:
                raise
            del lower, upper
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch = largest = batch // 2
            vertex = vertex[:0]
            continue
        bounded_count += children.size
        frontier, branch = Domains.join([frontier.select(rest), children]), torch.cat([branch[rest], child_branch])
        batch = paced_batch(batch, time.monotonic() - started, min(BATCH_START, largest), largest)
