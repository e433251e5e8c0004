"""Input-split branch and bound for low-dimensional inputs (ACAS Xu has 5).

The frontier of open sub-boxes is bounded in large batches with CROWN. A sub-box is closed when
every clause of the region has a row whose lower bound is positive there. Open sub-boxes are
probed for counterexamples (centre and the vertex minimising the linear lower bound) and split in
half along the dimension that contributes most to the open rows' bound looseness
(``|coefficient| × width``), a cheap gradient-based branching rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..bounds import BoundEngine, LayerBounds
from ..spec import Box
from .certificate import Closing, RegionCertificate, child_path
from .deadline import Deadline
from .falsify import descend, replay_most_violating
from .objective import RegionRows, box_tensors, clause_lower_bounds
from .result import Counterexample
from .settings import VerifySettings

# Boxes narrower than this in every dimension are not split further (left undecided).
MIN_WIDTH = 1e-12
# Counterexample search inside the leaves: descent steps in this many of the weakest boxes.
PROBE_BOXES, PROBE_STEPS = 64, 8
# The batch of boxes bounded at once starts small and doubles (up to settings.split_batch) while
# an iteration takes less than this, which keeps deadline checks frequent on a slow machine.
BATCH_START, TARGET_ITERATION_SECONDS = 64, 1.0


@dataclass(frozen=True)
class SearchOutcome:
    status: str  # "proven" | "sat" | "unknown" | "timeout"
    counterexample: Counterexample | None
    boxes_bounded: int


def _record_closings(certificate: RegionCertificate, paths: np.ndarray, closed: torch.Tensor,
                     weights: torch.Tensor, layers: LayerBounds) -> None:
    for index in closed.any(dim=1).nonzero().flatten().tolist():
        clauses = closed[index].nonzero().flatten().tolist()
        bounds = [[l[index].tolist(), u[index].tolist()] for l, u in layers.pre_activation]
        certificate.closings.append(Closing(str(paths[index]), clauses, weights[index, clauses].tolist(), bounds))


class _Frontier:
    """Open sub-boxes, each with the clauses still open on it and a priority (lowest first).

    The priority is the parent's weakest open lower bound, so the most suspicious boxes are
    bounded (and probed for counterexamples) first; a proof needs every box anyway, so the order
    changes how fast violations are found, not the amount of proof work.
    """

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor, open_clauses: torch.Tensor) -> None:
        self.lower, self.upper, self.open = lower, upper, open_clauses
        self.paths = np.array([""], dtype=object)  # node paths from the root (see certificate.py)
        self.priority = torch.zeros(lower.shape[0], dtype=lower.dtype, device=lower.device)
        self.stuck = False  # some box became too narrow to split while still open

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def push(self, lower: torch.Tensor, upper: torch.Tensor, open_clauses: torch.Tensor, priority: torch.Tensor,
             paths: np.ndarray) -> None:
        self.paths = np.concatenate([self.paths, paths])
        self.lower = torch.cat([self.lower, lower])
        self.upper = torch.cat([self.upper, upper])
        self.open = torch.cat([self.open, open_clauses])
        self.priority = torch.cat([self.priority, priority])

    def pop(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        order = self.priority.argsort()
        take, rest = order[:count], order[count:]
        popped = (self.lower[take], self.upper[take], self.open[take], self.paths[take.cpu().numpy()])
        self.lower, self.upper, self.open, self.priority = (
            self.lower[rest], self.upper[rest], self.open[rest], self.priority[rest])
        self.paths = self.paths[rest.cpu().numpy()]
        return popped


def input_split_search(engine: BoundEngine, rows: RegionRows, box: Box, settings: VerifySettings,
                       deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
                       certificate: RegionCertificate | None = None) -> SearchOutcome:
    """Decide the region; when ``certificate`` is given, every clause closing is recorded in it."""
    device = rows.A.device
    root_lower, root_upper = box_tensors(box, device)
    frontier = _Frontier(root_lower, root_upper, torch.ones(1, rows.n_clauses, dtype=torch.bool, device=device))
    bounded = 0
    undecided = False
    batch = BATCH_START
    while frontier.size:
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded)
        started = time.monotonic()
        lower, upper, inherited, paths = frontier.pop(batch)
        with torch.no_grad():
            result = engine.output_bounds(lower, upper, rows.A, -rows.b, method="crown")
        bounded += lower.shape[0]
        assert result.coefficients is not None and result.constant is not None
        bounds, weights = clause_lower_bounds(rows, result.lower, result.coefficients, result.constant, lower, upper)
        open_clauses = inherited & (bounds <= settings.decision_margin)
        if certificate is not None:
            _record_closings(certificate, paths, inherited & ~open_clauses, weights, result.layers)
        keep = open_clauses.any(dim=1)
        if bool(keep.any()):
            outcome = _split_open(engine, rows, lower[keep], upper[keep], result.lower[keep], result.coefficients[keep],
                                  open_clauses[keep], paths[keep.cpu().numpy()], settings, deadline, confirm, frontier)
            if outcome is not None:
                return SearchOutcome("sat", outcome, bounded)
            undecided |= frontier.stuck
        # Keep iterations near the target length, so the deadline is checked often.
        took = time.monotonic() - started
        if took < TARGET_ITERATION_SECONDS:
            batch = min(2 * batch, settings.split_batch)
        elif took > 2 * TARGET_ITERATION_SECONDS:
            batch = max(batch // 2, BATCH_START)
    return SearchOutcome("unknown" if undecided else "proven", None, bounded)


def _split_open(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor, lb: torch.Tensor,
                coef: torch.Tensor, open_clauses: torch.Tensor, paths: np.ndarray, settings: VerifySettings, deadline: Deadline,
                confirm: Callable[[np.ndarray], Counterexample | None], frontier: _Frontier) -> Counterexample | None:
    """Probe the open boxes for a counterexample, then split each in two onto the frontier."""
    row_open = open_clauses.gather(1, rows.owner.unsqueeze(0).expand(lower.shape[0], -1))
    row_open &= lb <= settings.decision_margin
    found = _probe(engine, rows, lower, upper, lb, coef, row_open, confirm, deadline)
    if found is not None:
        return found
    width = upper - lower
    splittable = width.max(dim=1).values > MIN_WIDTH
    frontier.stuck = frontier.stuck or bool((~splittable).any())
    lower, upper, width, coef, row_open, lb, open_clauses = (
        t[splittable] for t in (lower, upper, width, coef, row_open, lb, open_clauses))
    paths = paths[splittable.cpu().numpy()]
    if lower.shape[0] == 0:
        return None
    score = (coef.abs() * width.unsqueeze(1) * row_open.unsqueeze(-1)).sum(dim=1)
    score = torch.where(width > MIN_WIDTH, score + 1e-30 * width, torch.zeros_like(score))
    dim = score.argmax(dim=1)
    index = torch.arange(lower.shape[0], device=lower.device)
    middle = (lower[index, dim] + upper[index, dim]) / 2
    left_upper, right_lower = upper.clone(), lower.clone()
    left_upper[index, dim] = middle
    right_lower[index, dim] = middle
    priority = torch.where(row_open, lb, torch.full_like(lb, float("inf"))).min(dim=1).values
    dims = dim.tolist()
    children = np.array([child_path(p, d, False) for p, d in zip(paths, dims)]
                        + [child_path(p, d, True) for p, d in zip(paths, dims)], dtype=object)
    frontier.push(torch.cat([lower, right_lower]), torch.cat([left_upper, upper]),
                  torch.cat([open_clauses, open_clauses]), torch.cat([priority, priority]), children)
    return None


def _probe(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor,
           lb: torch.Tensor, coef: torch.Tensor, row_open: torch.Tensor,
           confirm: Callable[[np.ndarray], Counterexample | None], deadline: Deadline) -> Counterexample | None:
    """Look for a counterexample in the open boxes: the lower-bound minimising vertex of each,
    refined by a few steps of projected descent in the most promising boxes; replay violators."""
    weakest_bound, weakest = torch.where(row_open, lb, torch.full_like(lb, float("inf"))).min(dim=1)
    weakest_coef = coef[torch.arange(lower.shape[0], device=lower.device), weakest]
    vertex = torch.where(weakest_coef > 0, lower, upper)
    promising = weakest_bound.argsort()[:PROBE_BOXES]
    refined = descend(engine.chain, rows, vertex[promising], lower[promising], upper[promising], PROBE_STEPS, deadline)
    points = torch.cat([(lower + upper) / 2, vertex, refined])
    return replay_most_violating(engine.chain, points, rows.margin, confirm, 8)
