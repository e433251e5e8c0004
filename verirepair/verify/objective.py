"""The violation margin of a region: ``<= 0`` exactly where the output violates one of its clauses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..bounds import concretize
from ..bounds.rounding import gamma, lowered, magnitude
from ..spec import Box, Region

# Steps of the search for a convex combination of a clause's rows (see clause_lower_bounds).
COMBINATION_STEPS = 12


class NaNBound(RuntimeError):
    """A bound that decides a clause came out NaN: a bug or an overflow, never evidence. Every
    comparison with NaN is false, so a search that tested ``bound <= margin`` for "open" would have
    closed the branch; the verifier stops with an internal error instead."""


def still_open(bounds: torch.Tensor, margin: float) -> torch.Tensor:
    """Which lower bounds of a violation margin fail to refute it (``not bound > margin``); the one
    test every search uses. A NaN bound raises `NaNBound`."""
    if bool(torch.isnan(bounds).any()):
        raise NaNBound(f"{int(torch.isnan(bounds).sum())} bounds are NaN")
    return ~(bounds > margin)


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
    def of(region: Region, n_outputs: int, device: torch.device) -> RegionRows:
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


def clause_lower_bounds(rows: RegionRows, row_bounds: torch.Tensor, coefficients: torch.Tensor,
                        constants: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                        steps: int = COMBINATION_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box and clause, a lower bound that proves the clause unreachable when it is > 0, and
    the row weights ``λ`` [B, K, R] that give it (zero outside the clause's own rows).

    A clause is violated only where *all* its rows are <= 0, so it is unreachable on a box when
    some convex combination ``Σ λ_i row_i`` is positive there. Each row has a linear lower bound
    ``a_i·x + c_i`` valid on the box (from CROWN), hence ``Σ λ_i (a_i·x + c_i)`` bounds the
    combination from below. Single rows (``row_bounds``, one-hot ``λ``) are the corners of the
    simplex; a few steps of exponentiated supergradient ascent on ``λ`` find better mixtures where
    rows tie, which is where "some single row is positive" needs very small boxes.
    """
    batch, n_rows = row_bounds.shape
    best = rows.clause_margins(row_bounds)  # best single row per clause [B, K]
    best_weights = torch.zeros(batch, rows.n_clauses, n_rows, dtype=row_bounds.dtype, device=row_bounds.device)
    for clause in range(rows.n_clauses):
        members = (rows.owner == clause).nonzero().flatten()
        if members.numel() == 0:
            continue
        member_bounds = row_bounds[:, members]
        best_weights[:, clause, members] = torch.nn.functional.one_hot(
            member_bounds.argmax(1), members.numel()).to(row_bounds.dtype)
        if members.numel() < 2:
            continue
        a, c = coefficients[:, members], constants[:, members]  # [B, k, n], [B, k]
        weights = torch.full((batch, members.numel()), 1.0 / members.numel(), dtype=a.dtype, device=a.device)
        for step in range(steps):
            mixed = (weights.unsqueeze(-1) * a).sum(1, keepdim=True)  # [B, 1, n]
            # the mixture is formed in float64 too: its rounding (k products and sums per entry)
            # comes off the constant before the concretization, which accounts for its own
            mixing_error = gamma(members.numel() + 1) * ((weights * c.abs()).sum(1) + (
                (weights.unsqueeze(-1) * a.abs()).sum(1) * magnitude(lower, upper)).sum(-1))
            value = concretize(mixed, lowered((weights * c).sum(1, keepdim=True), mixing_error.unsqueeze(1)),
                               lower, upper).squeeze(1)
            better = value > best[:, clause]
            best[:, clause] = torch.where(better, value, best[:, clause])
            best_weights[better.nonzero().flatten().unsqueeze(1), clause, members.unsqueeze(0)] = weights[better]
            vertex = torch.where(mixed > 0, lower.unsqueeze(1), upper.unsqueeze(1))  # minimiser [B, 1, n]
            gradient = c + (a * vertex).sum(-1)  # each row's bound at the minimiser
            scale = gradient.abs().amax(1, keepdim=True).clamp(min=1e-30)
            weights = weights * torch.exp(2.0 * gradient / scale / (1 + step))
            weights = weights / weights.sum(1, keepdim=True)
    return best, best_weights
