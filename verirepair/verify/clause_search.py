"""Run a branch-and-bound search on each open clause of a region, each within its share of time.

Both neuron-split searches (`relu_split`, `activation_split`) prove one objective row at a time,
so only single-row clauses are searched; the others stay open for whatever follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from ..bounds import BoundEngine, LayerBounds
from .certificate import ReluLeafRecord
from .deadline import Deadline
from .objective import RegionRows
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

Tensor = torch.Tensor


class ClauseSearch(Protocol):
    def __call__(self, engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                 pre_bounds: list[tuple[Tensor, Tensor]], settings: VerifySettings, deadline: Deadline,
                 margin_of: Callable[[Tensor], Tensor], confirm: Callable[[np.ndarray], Counterexample | None],
                 leaves: list[ReluLeafRecord] | None = None) -> SearchOutcome: ...


def search_clauses(search: ClauseSearch, share_of_time: float, engine: BoundEngine, rows: RegionRows,
                   open_clauses: list[int], layers: LayerBounds, box_lower: Tensor, box_upper: Tensor,
                   settings: VerifySettings, deadline: Deadline,
                   confirm: Callable[[np.ndarray], Counterexample | None]) -> tuple[SearchOutcome | None, list[int]]:
    """``search`` on each open single-row clause, each within its part of ``share_of_time`` of the
    time left. Returns a counterexample outcome if one was confirmed (else None) and the clauses
    still open."""
    pre_bounds = [(l[0], u[0]) for l, u in layers.pre_activation]
    left: list[int] = []
    for position, clause in enumerate(open_clauses):
        members = (rows.owner == clause).nonzero().flatten()
        if members.numel() != 1 or deadline.expired():
            left.append(clause)
            continue
        row = int(members[0])
        share = Deadline(share_of_time * deadline.remaining() / (len(open_clauses) - position))
        out_of_memory = False
        try:
            outcome = search(engine, rows.A[row], -float(rows.b[row]), box_lower, box_upper, pre_bounds,
                             settings, share, rows.margin, confirm)
        except torch.OutOfMemoryError:  # the device's memory cap (VerifySettings.device_memory_gib)
            outcome, out_of_memory = SearchOutcome("unknown", None, 0), True
        if out_of_memory and torch.cuda.is_available():
            torch.cuda.empty_cache()  # the frontier is gone now: what follows gets its memory
        if outcome.status == "sat":
            return outcome, []
        if outcome.status != "proven":
            left.append(clause)
    return None, left
