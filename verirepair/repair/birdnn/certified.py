"""Certified margin: a differentiable CROWN lower bound of the property margin on the boxes of a
partition of the property's input boxes.

Sample losses only lift the margin *at* the samples; between them the repaired network may still
come within a hair of the property boundary, and then the verifier needs millions of boxes to
prove it. `Partition` covers every region box with sub-boxes, bisecting those whose bound is not
yet positive (as branch and bound does); training lifts the bound of the leaves just short of
the target where the property holds (the idea of certified training). Once every leaf's bound is positive, the partition itself is an argument that
the property holds, and the verifier, which decides, has a cover of modest size to find. The bound
is the same CROWN the verifier uses (`verirepair.bounds.BoundEngine`), run on the bound graph of
the module's current weights (`TrainableNetwork.bound_graph`: rebuilt for each bound, its
operators hold the parameters themselves), so that gradients flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...bounds import BoundEngine, concretize
from ...verify.input_split import candidate_halves
from ...verify.objective import RegionRows, clause_lower_bounds
from ..parameters import TrainableNetwork
from .domain import RegionTensors


@dataclass(frozen=True)
class ClauseBounds:
    """Per box and clause of a region, a lower bound of the clause margin and the linear lower
    bound ``linear·x + constant`` (valid on the box) that gives it."""

    bounds: torch.Tensor  # [B, K]
    linear: torch.Tensor  # [B, K, n]
    constant: torch.Tensor  # [B, K]
    split_weight: torch.Tensor  # [B, n] Σ |coefficient| over the unrefuted rows of the weakest clause

    @property
    def margin(self) -> torch.Tensor:
        return self.bounds.amin(dim=1)


def clause_bounds(module: TrainableNetwork, region: RegionTensors, lower: torch.Tensor, upper: torch.Tensor) -> ClauseBounds:
    """CROWN bounds of every clause margin of ``region`` on each box, differentiable in the
    module's weights.

    A clause is violated only where all its rows are <= 0, so it is excluded on a box once some
    convex combination of its rows has a positive lower bound there: the weights are the
    verifier's (`clause_lower_bounds`, found without gradients), the bound of the combination is
    recomputed from the rows' linear bounds with gradients. The split weight is what the
    verifier's input split chooses a dimension from."""
    dtype = lower.dtype
    lower, upper = lower.to(torch.float64), upper.to(torch.float64)
    engine = BoundEngine(module.bound_graph())
    rows = RegionRows(region.rows.to(torch.float64), region.b.to(torch.float64), region.clause_of_row, region.n_clauses, False)
    result = engine.output_bounds(lower, upper, rows.A, -rows.b)
    assert result.coefficients is not None and result.constant is not None
    with torch.no_grad():
        _, weights = clause_lower_bounds(rows, result.lower, result.coefficients, result.constant, lower, upper)
    linear = weights @ result.coefficients  # [B, K, n]
    constant = (weights @ result.constant.unsqueeze(-1)).squeeze(-1)
    bounds = torch.maximum(concretize(linear, constant, lower, upper), rows.clause_margins(result.lower))
    weakest = bounds.argmin(dim=1)
    open_rows = (rows.owner.unsqueeze(0) == weakest.unsqueeze(1)) & (result.lower <= 0)  # [B, R]
    split_weight = (result.coefficients.abs() * open_rows.unsqueeze(-1)).sum(dim=1)
    return ClauseBounds(bounds.to(dtype), linear.to(dtype), constant.to(dtype), split_weight.to(dtype))


def certified_margins(module: TrainableNetwork, region: RegionTensors, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[B]: a lower bound of the property margin of ``region`` on each box: the smallest clause
    bound of `clause_bounds`, differentiable in the module's weights."""
    return clause_bounds(module, region, lower, upper).margin


def whole_box_margins(module: TrainableNetwork, regions: list[RegionTensors]) -> torch.Tensor:
    """[R]: `certified_margins` of each region on its whole box (no partition)."""
    dtype = regions[0].rows.dtype
    return torch.cat([certified_margins(module, region, torch.tensor(region.box.lower, dtype=dtype).unsqueeze(0),
                                        torch.tensor(region.box.upper, dtype=dtype).unsqueeze(0)) for region in regions])


class Partition:
    """Sub-boxes covering each region box, with the last bound computed for each.

    ``refine`` re-bounds the open leaves (bound <= 0) and the fragile ones (bound below
    ``fragile`` target margins), and bisects open leaves while they are wider than
    ``min_fraction`` of the region box and there are fewer than ``max_boxes`` leaves; a leaf
    that violates the property at its centre or weakest vertex is not bisected (training must
    repair it first). As in the verifier's input split, the dimension is chosen by lookahead: the
    ``candidates`` dimensions where the deciding linear bound varies most (|coefficient| × width)
    are each tried, and the split whose halves leave the smallest total shortfall below zero (each
    half judged also by its parent's linear bounds) is kept.
    ``draw`` gives training boxes: the leaves just short of the target margin.
    """

    def __init__(self, regions: list[RegionTensors], min_fraction: float, max_boxes: int, dtype: torch.dtype,
                 candidates: int = 3) -> None:
        self.regions, self.min_fraction, self.max_boxes, self.dtype = regions, min_fraction, max_boxes, dtype
        self.candidates = candidates
        self.lower = [torch.tensor(r.box.lower, dtype=dtype).unsqueeze(0) for r in regions]
        self.upper = [torch.tensor(r.box.upper, dtype=dtype).unsqueeze(0) for r in regions]
        self.bound = [torch.full((1,), -torch.inf, dtype=dtype) for _ in regions]
        self.score = [torch.zeros((1, r.box.dim), dtype=dtype) for r in regions]  # split weight × width
        # each leaf's clause bounds as linear functions: they stay valid on its halves
        self.linear = [torch.zeros((1, r.n_clauses, r.box.dim), dtype=dtype) for r in regions]
        self.constant = [torch.full((1, r.n_clauses), -torch.inf, dtype=dtype) for r in regions]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.bound)

    @property
    def open(self) -> int:
        return sum(int((b <= 0).sum()) for b in self.bound)

    def _bounds(self, module: TrainableNetwork, k: int, lower: torch.Tensor, upper: torch.Tensor,
                chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(margin bounds, split scores, clause linear functions, constants) of boxes of region ``k``."""
        parts = []
        with torch.no_grad():
            for start in range(0, len(lower), chunk):
                low, high = lower[start:start + chunk], upper[start:start + chunk]
                found = clause_bounds(module, self.regions[k], low, high)
                parts.append((found.margin, found.split_weight * (high - low), found.linear, found.constant))
        if not parts:
            n, clauses = lower.shape[1], self.regions[k].n_clauses
            return lower.new_zeros(0), lower.new_zeros((0, n)), lower.new_zeros((0, clauses, n)), lower.new_zeros((0, clauses))
        return tuple(torch.cat(column) for column in zip(*parts))  # type: ignore[return-value]

    def _rebound(self, module: TrainableNetwork, k: int, index: torch.Tensor) -> None:
        bound, score, linear, constant = self._bounds(module, k, self.lower[k][index], self.upper[k][index])
        self.bound[k][index], self.score[k][index], self.linear[k][index], self.constant[k][index] = bound, score, linear, constant

    def _holds_at_probes(self, module: TrainableNetwork, k: int, index: torch.Tensor) -> torch.Tensor:
        """Whether the property holds at each leaf's centre and at the vertex minimising its
        weakest clause's linear bound: a leaf that violates there needs training, not finer leaves."""
        lower, upper = self.lower[k][index], self.upper[k][index]
        weakest = self.constant[k][index].new_zeros(len(index), dtype=torch.long)
        if len(index):
            weakest = concretize(self.linear[k][index], self.constant[k][index], lower, upper).argmin(dim=1)
        linear = self.linear[k][index][torch.arange(len(index)), weakest]
        vertex = torch.where(linear > 0, lower, upper)
        with torch.no_grad():
            margins = self.regions[k].margin(module(torch.cat([(lower + upper) / 2, vertex])))
        return (margins[:len(index)] > 0) & (margins[len(index):] > 0)

    def _bisect(self, module: TrainableNetwork, k: int) -> bool:
        """Bisect the open leaves of region ``k`` that are still wide enough; False if none was."""
        box = self.regions[k].box
        span = torch.tensor(box.upper - box.lower, dtype=self.dtype).clamp(min=1e-30)
        wide = (self.upper[k] - self.lower[k]) / span > self.min_fraction
        room = max(0, self.max_boxes - self.size)
        chosen = torch.nonzero((self.bound[k] <= 0) & wide.any(dim=1)).flatten()
        chosen = chosen[self._holds_at_probes(module, k, chosen)]
        chosen = chosen[torch.argsort(self.bound[k][chosen], descending=True)][:room]  # nearest to closing first
        if len(chosen) == 0:
            return False
        n, count = len(chosen), min(self.candidates, box.dim)
        ranked = torch.where(wide[chosen], self.score[k][chosen], torch.full_like(self.score[k][chosen], -1.0))
        dims = ranked.argsort(dim=1, descending=True)[:, :count]  # [n, count]
        usable = torch.gather(wide[chosen], 1, dims)
        halves_lower, halves_upper = candidate_halves(self.lower[k][chosen], self.upper[k][chosen], dims)
        bound, score, linear, constant = self._bounds(module, k, halves_lower, halves_upper)
        # CROWN is not monotone: a half can bound worse than its parent, whose linear bounds hold
        # on the halves too; the choice of split judges each half by the better of the two.
        parent = torch.arange(n).repeat_interleave(count).repeat(2)
        inherited = concretize(self.linear[k][chosen][parent], self.constant[k][chosen][parent],
                               halves_lower, halves_upper).amin(dim=1)
        judged = torch.maximum(bound, inherited)
        left, right = judged[:n * count].reshape(n, count), judged[n * count:].reshape(n, count)
        shortfall = torch.relu(-left) + torch.relu(-right)
        shortfall = torch.where(usable, shortfall, torch.full_like(shortfall, torch.inf))
        best = shortfall.argmin(dim=1)  # ties go to the better-scored (earlier) candidate
        pick = torch.arange(n) * count + best
        keep = torch.ones(len(self.bound[k]), dtype=torch.bool)
        keep[chosen] = False
        halves = torch.cat([pick, n * count + pick])
        self.lower[k] = torch.cat([self.lower[k][keep], halves_lower[halves]])
        self.upper[k] = torch.cat([self.upper[k][keep], halves_upper[halves]])
        self.bound[k] = torch.cat([self.bound[k][keep], bound[halves]])
        self.score[k] = torch.cat([self.score[k][keep], score[halves]])
        self.linear[k] = torch.cat([self.linear[k][keep], linear[halves]])
        self.constant[k] = torch.cat([self.constant[k][keep], constant[halves]])
        return True

    def refine(self, module: TrainableNetwork, target: float, fragile: float = 3.0, passes: int = 3, everything: bool = False) -> None:
        for k in range(len(self.regions)):
            stale = torch.ones_like(self.bound[k], dtype=torch.bool) if everything else self.bound[k] < fragile * target
            self._rebound(module, k, torch.nonzero(stale).flatten())
        for _ in range(passes):
            if not any([self._bisect(module, k) for k in range(len(self.regions))]):
                return

    def draw(self, count: int, target: float, module: TrainableNetwork,
             rng: np.random.Generator) -> list[tuple[RegionTensors, torch.Tensor, torch.Tensor]]:
        """Up to ``count`` leaves whose bound is below ``target`` but where the property holds at
        the probes (centre, weakest vertex), sampled among the 4·count nearest to the target.
        Those are the leaves a small change of the weights certifies. A leaf that violates is the
        imitation loss's business, and one far below the target is bisected by `refine` until
        its halves come near: pushing on very loose bounds changes the behaviour everywhere."""
        drawn = []
        per_region = max(1, count // len(self.regions))
        for k, region in enumerate(self.regions):
            below = torch.nonzero(self.bound[k] < target).flatten()
            nearest = below[torch.argsort(self.bound[k][below], descending=True)[:4 * per_region]]
            nearest = nearest[self._holds_at_probes(module, k, nearest)]
            picked = nearest[torch.from_numpy(rng.choice(len(nearest), size=min(per_region, len(nearest)), replace=False))]
            if len(picked):
                drawn.append((region, self.lower[k][picked], self.upper[k][picked]))
        return drawn


def certified_shortfall(module: TrainableNetwork, boxes: list[tuple[RegionTensors, torch.Tensor, torch.Tensor]],
                        target: float, scale: float, squared: bool = True) -> torch.Tensor:
    """Mean hinge (in margin scales, squared or not) of the certified margin below ``target``
    over the boxes."""
    shortfalls = torch.cat([torch.relu(target - certified_margins(module, region, lower, upper)) / scale
                            for region, lower, upper in boxes])
    return (shortfalls.pow(2) if squared else shortfalls).mean()
