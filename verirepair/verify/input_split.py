"""Input-split branch and bound for low-dimensional inputs (ACAS Xu has 5).

The frontier of open sub-boxes is bounded in large batches with CROWN. A sub-box is closed when
every clause of the region has a row whose lower bound is positive there. Open sub-boxes are
probed for counterexamples (centre and the vertex minimising the linear lower bound) and split in
half along the dimension that contributes most to the open rows' bound looseness
(``|coefficient| × width``), a cheap gradient-based branching rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..bounds import BoundEngine
from ..spec import Box
from .deadline import Deadline
from .objective import RegionRows, box_tensors
from .result import Counterexample
from .settings import VerifySettings

# Boxes narrower than this in every dimension are not split further (left undecided).
MIN_WIDTH = 1e-12


@dataclass(frozen=True)
class SearchOutcome:
    status: str  # "proven" | "sat" | "unknown" | "timeout"
    counterexample: Counterexample | None
    boxes_bounded: int


def _open_clauses(rows: RegionRows, lower_bounds: torch.Tensor, margin: float) -> torch.Tensor:
    proven = (lower_bounds > margin).to(lower_bounds.dtype)
    refuted = rows.clause_margins(proven) > 0  # some row of the clause is proven positive
    return ~refuted


def input_split_search(engine: BoundEngine, rows: RegionRows, box: Box, settings: VerifySettings,
                       deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None]) -> SearchOutcome:
    device = rows.A.device
    root_lower, root_upper = box_tensors(box, device)
    lowers, uppers = [root_lower], [root_upper]
    bounded = 0
    undecided = False
    while lowers:
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded)
        lower, upper = torch.cat(lowers), torch.cat(uppers)
        take = min(settings.split_batch, lower.shape[0])
        lowers, uppers = [lower[:-take]] if lower.shape[0] > take else [], [upper[:-take]] if lower.shape[0] > take else []
        lower, upper = lower[-take:], upper[-take:]
        with torch.no_grad():
            result = engine.output_bounds(lower, upper, rows.A, -rows.b, method="crown")
        bounded += take
        open_clauses = _open_clauses(rows, result.lower, settings.decision_margin)
        keep = open_clauses.any(dim=1)
        if not bool(keep.any()):
            continue
        lower, upper = lower[keep], upper[keep]
        lb, coef = result.lower[keep], result.coefficients[keep]
        row_open = open_clauses[keep].gather(1, rows.owner.unsqueeze(0).expand(lower.shape[0], -1))
        row_open &= lb <= settings.decision_margin
        found = _probe(engine, rows, lower, upper, lb, coef, row_open, confirm)
        if found is not None:
            return SearchOutcome("sat", found, bounded)
        width = upper - lower
        splittable = width.max(dim=1).values > MIN_WIDTH
        undecided |= bool((~splittable).any())
        lower, upper, width, coef, row_open = (t[splittable] for t in (lower, upper, width, coef, row_open))
        if lower.shape[0] == 0:
            continue
        score = (coef.abs() * width.unsqueeze(1) * row_open.unsqueeze(-1)).sum(dim=1)
        score = torch.where(width > MIN_WIDTH, score + 1e-30 * width, torch.zeros_like(score))
        dim = score.argmax(dim=1)
        rows_index = torch.arange(lower.shape[0], device=device)
        middle = (lower[rows_index, dim] + upper[rows_index, dim]) / 2
        left_upper, right_lower = upper.clone(), lower.clone()
        left_upper[rows_index, dim] = middle
        right_lower[rows_index, dim] = middle
        lowers += [lower, right_lower]
        uppers += [left_upper, upper]
    return SearchOutcome("unknown" if undecided else "proven", None, bounded)


def _probe(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor,
           lb: torch.Tensor, coef: torch.Tensor, row_open: torch.Tensor,
           confirm: Callable[[np.ndarray], Counterexample | None]) -> Counterexample | None:
    """Evaluate box centres and lower-bound minimising vertices; replay violating ones."""
    weakest = torch.where(row_open, lb, torch.full_like(lb, float("inf"))).argmin(dim=1)
    weakest_coef = coef[torch.arange(lower.shape[0], device=lower.device), weakest]
    vertex = torch.where(weakest_coef > 0, lower, upper)
    points = torch.cat([(lower + upper) / 2, vertex])
    with torch.no_grad():
        margins = rows.margin(engine.chain.forward(points))
    for index in margins.argsort()[:8].tolist():
        if margins[index] > 0:
            break
        found = confirm(points[index].cpu().numpy())
        if found is not None:
            return found
    return None
