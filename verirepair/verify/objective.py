"""The violation margin of a region: ``<= 0`` exactly where the output violates one of its clauses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec import Box, Region


def box_tensors(box: Box, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The box as float64 tensors [1, n] (copies: spec arrays are shared and must not change)."""
    lower = torch.tensor(box.lower, dtype=torch.float64, device=device).unsqueeze(0)
    upper = torch.tensor(box.upper, dtype=torch.float64, device=device).unsqueeze(0)
    return lower, upper


@dataclass(frozen=True)
class RegionRows:
    """All clause rows of a region stacked: ``A_all·y - b_all``, row r belonging to clause ``owner[r]``."""

    A: torch.Tensor  # [R, n_out]
    b: torch.Tensor  # [R]
    owner: torch.Tensor  # [R] clause index
    n_clauses: int
    empty_clause: bool  # some clause has no rows: any point of the box violates

    @staticmethod
    def of(region: Region, n_outputs: int, device: torch.device) -> "RegionRows":
        As = [c.A for c in region.clauses if c.A.shape[0]]
        bs = [c.b for c in region.clauses if c.A.shape[0]]
        owner = [k for k, c in enumerate(region.clauses) for _ in range(c.A.shape[0])]
        A = np.vstack(As) if As else np.zeros((0, n_outputs))
        b = np.concatenate(bs) if bs else np.zeros(0)
        return RegionRows(
            torch.as_tensor(A, dtype=torch.float64, device=device),
            torch.as_tensor(b, dtype=torch.float64, device=device),
            torch.as_tensor(owner, dtype=torch.long, device=device),
            len(region.clauses),
            any(c.A.shape[0] == 0 for c in region.clauses),
        )

    def clause_margins(self, row_values: torch.Tensor) -> torch.Tensor:
        """Per clause, the largest row value ([N, R] → [N, K]); a clause with no rows gets -inf."""
        out = torch.full((row_values.shape[0], self.n_clauses), float("-inf"),
                         dtype=row_values.dtype, device=row_values.device)
        index = self.owner.unsqueeze(0).expand(row_values.shape[0], -1)
        return out.scatter_reduce(1, index, row_values, reduce="amax", include_self=True)

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """min over clauses of max over its rows of ``A·y - b``: ``<= 0`` iff ``y`` violates."""
        return self.clause_margins(y @ self.A.T - self.b).min(dim=1).values
