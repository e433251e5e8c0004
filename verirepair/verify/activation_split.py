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

Certificates (``leaves`` given to `activation_split_search`): every domain carries its splits
``(layer, neuron, point, side)`` from the root (side 1: ``z >= point``, 0: ``z <= point``; layers
counted over the non-linear nodes), and every closed domain is recorded (`ReluLeafRecord`): its
splits, and per sigmoid/tanh neuron and ReLU unstable on it ``[layer, neuron, slope_low, slope_up,
beta_upper, beta_lower]``, the α-CROWN slopes (a ReLU's lower slope; its upper slope is unused)
and multipliers of its bound. The checker re-derives each domain's intervals the way `bound` does
(CROWN from the box under the parent's intervals), and any slopes and multipliers give a valid
bound, so nothing recorded has to be trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundRelu, BoundSShaped, LayerBounds
from ..bounds.engine import Relaxation
from .certificate import ReluLeafRecord
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


Split = tuple[int, int, float, int]  # (layer, neuron, point, side): see the module doc
Paths = list[tuple[Split, ...]]


@dataclass
class Domains:
    """A batch of domains: per non-affine layer the neurons' input intervals, each bound, and (for
    a certificate) each domain's splits from the root."""

    lower: list[Tensor]  # per non-affine layer [D, n_k]
    upper: list[Tensor]
    bound: Tensor  # [D]
    paths: Paths | None = None

    @property
    def size(self) -> int:
        return int(self.bound.shape[0])

    def select(self, index: Tensor) -> Domains:
        paths = None if self.paths is None else [self.paths[i] for i in index.tolist()]
        return Domains([l[index] for l in self.lower], [u[index] for u in self.upper], self.bound[index], paths)

    @staticmethod
    def join(parts: list[Domains]) -> Domains:
        layers = range(len(parts[0].lower))
        paths = None if any(p.paths is None for p in parts) else [path for p in parts for path in p.paths or []]
        return Domains([torch.cat([p.lower[k] for p in parts]) for k in layers],
                       [torch.cat([p.upper[k] for p in parts]) for k in layers], torch.cat([p.bound for p in parts]),
                       paths)


class ActivationSplitter:
    """Bounds, branches and splits domains of one objective ``c·f(x) + offset`` over one box."""

    def __init__(self, engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                 leaves: list[ReluLeafRecord] | None = None, margin: float = 0.0) -> None:
        self.engine = engine
        self.leaves, self.margin = leaves, margin  # closed domains are recorded in ``leaves`` when given
        self.C = objective.reshape(1, -1)
        self.d = torch.tensor([offset], dtype=box_lower.dtype, device=box_lower.device)
        self.box_lower, self.box_upper = box_lower.reshape(1, -1), box_upper.reshape(1, -1)
        graph = engine.graph
        self.splittable = [isinstance(graph.nodes[i].op, BoundSShaped) for i in graph.nonlinear]

    def bound(self, lower: list[Tensor], upper: list[Tensor], paths: Paths | None = None) -> tuple[Domains, Tensor, Tensor]:
        """The domains with their layers' bounds tightened under their intervals, each domain's
        bound, its branching neuron (flat index over all layers; -1: none left) and the box
        vertex minimising its final linear bound (a counterexample candidate); the closed ones
        recorded when recording."""
        count = lower[0].shape[0]
        box_lower, box_upper = self.box_lower.expand(count, -1), self.box_upper.expand(count, -1)
        prior = LayerBounds(tuple(zip(lower, upper)))
        with torch.no_grad():
            layers = self.engine.layer_bounds(box_lower, box_upper, "crown", prior=prior)
        result = self.engine.output_bounds(box_lower, box_upper, self.C, self.d, method="alpha-crown",
                                           alpha_steps=OPTIMISE_STEPS, layers=layers, interval_multipliers=True,
                                           keep_relaxation=self.leaves is not None)
        assert result.coefficients is not None
        vertex = torch.where(result.coefficients[:, 0] > 0, box_lower, box_upper)
        domains = Domains([l for l, _ in layers.pre_activation], [u for _, u in layers.pre_activation],
                          result.lower[:, 0].detach(), paths)
        if self.leaves is not None and result.relaxation is not None:
            self.leaves.extend(self._records(domains, ~still_open(domains.bound, self.margin), result.relaxation))
        return domains, self._branching(domains), vertex

    def _records(self, domains: Domains, closed: Tensor, relaxation: Relaxation) -> list[ReluLeafRecord]:
        """The certificate's record of each closed domain (see the module doc)."""
        assert domains.paths is not None
        graph = self.engine.graph
        index = closed.nonzero().flatten()
        columns = []
        for k, node in enumerate(graph.nonlinear):
            op, count, n = graph.nodes[node].op, index.numel(), domains.lower[k].shape[1]
            slopes = relaxation.slopes.get(node)
            if isinstance(op, BoundSShaped) and slopes is not None:
                low, high = (slopes[index, 0, :, side] * op.max_derivative for side in (0, 1))
            elif isinstance(op, BoundRelu) and slopes is not None:
                low, high = slopes[index, 0], torch.zeros_like(slopes[index, 0])
            else:
                low = high = torch.zeros((count, n), dtype=torch.float64)
            beta = relaxation.multipliers.get(node)
            beta = torch.zeros(count, n, 2, dtype=torch.float64) if beta is None else beta[index, 0]
            layer = torch.stack([torch.full((count, n), float(k), dtype=torch.float64),
                                 torch.arange(n, dtype=torch.float64).expand(count, n)], dim=-1)
            columns.append(torch.cat([layer, torch.stack([low, high], dim=-1).to(torch.float64).cpu(),
                                      beta.to(torch.float64).cpu()], dim=-1))
        table = torch.cat(columns, dim=1).numpy() if columns else np.zeros((index.numel(), 0, 6))
        records = []
        unstable = torch.cat([(l[index] < 0) & (u[index] > 0) | torch.tensor(splittable, device=l.device)
                              for l, u, splittable in zip(domains.lower, domains.upper, self.splittable)], dim=1)
        # a stable ReLU has no slope to choose: it is recorded only for its multipliers
        recorded = unstable.cpu().numpy() | (table[..., 4:] != 0).any(axis=-1)
        for position, row in enumerate(index.tolist()):
            neurons = [[int(entry[0]), int(entry[1]), *map(float, entry[2:])] for entry in table[position][recorded[position]]]
            records.append(ReluLeafRecord([list(split) for split in domains.paths[row]], neurons))
        return records

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

    def children(self, domains: Domains, branch: Tensor) -> tuple[list[Tensor], list[Tensor], Paths | None]:
        """Intervals of two children per domain: the branching neuron's lower and upper half; and
        their paths when the domains have them."""
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
        if domains.paths is None:
            return lower, upper, None
        paths = []
        for side, parents in ((0, range(domains.size)), (1, range(domains.size))):
            for row in parents:
                flat = int(branch[row])
                k = int(np.searchsorted(offsets, flat, side="right")) - 1
                j = flat - int(offsets[k])
                point = float(upper[k][row, j]) if side == 0 else float(lower[k][domains.size + row, j])
                paths.append((*domains.paths[row], (k, j, point, side)))
        return lower, upper, paths


def activation_split_search(engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                            pre_bounds: list[tuple[Tensor, Tensor]], settings: VerifySettings, deadline: Deadline,
                            margin_of: Callable[[Tensor], Tensor], confirm: Callable[[np.ndarray], Counterexample | None],
                            leaves: list[ReluLeafRecord] | None = None) -> SearchOutcome:
    """Prove ``objective·f(x) + offset > 0`` on the box, or find a confirmed counterexample.
    ``leaves``: filled with the closed domains' records for a certificate."""
    splitter = ActivationSplitter(engine, objective, offset, box_lower, box_upper, leaves, settings.decision_margin)
    frontier, branch, vertex = splitter.bound([l.reshape(1, -1) for l, _ in pre_bounds],
                                              [u.reshape(1, -1) for _, u in pre_bounds],
                                              None if leaves is None else [()])
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
        lower, upper, paths = splitter.children(frontier.select(take), branch[take])
        try:
            children, child_branch, vertex = splitter.bound(lower, upper, paths)
        except torch.OutOfMemoryError:  # the device's memory cap: the frontier is intact, retry smaller
            if batch <= 1:
                raise
            del lower, upper, paths
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch = largest = batch // 2
            vertex = vertex[:0]
            continue
        bounded_count += children.size
        frontier, branch = Domains.join([frontier.select(rest), children]), torch.cat([branch[rest], child_branch])
        batch = paced_batch(batch, time.monotonic() - started, min(BATCH_START, largest), largest)
