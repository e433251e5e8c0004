"""Domain characterisation: sample a property's input boxes and split the samples by the property.

For one region of a `Spec` (input box + violation clauses ``A·y <= b``) the *clause margin* of an
output ``y`` is ``max_rows(A·y - b)``: it is > 0 exactly when the clause is not violated. The
*property margin* is the smallest clause margin of the region; the property holds at ``x`` iff it
is > 0. A sample is *positive* when the property holds there and *negative* otherwise.

Samples come from a uniform draw of each box, the verifier's counterexamples and points drawn
close to them (a Gaussian cloud, clipped to the box), and — for the term that keeps the network's
behaviour outside the property's domain — a uniform draw of a larger *input space* box with the
property's boxes cut out (`verirepair.repair.input_domain.outside_boxes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...spec import Box, Region, Spec


@dataclass(frozen=True)
class RegionTensors:
    """The clauses of one region stacked for batched margins: ``rows`` [R, m] and ``b`` [R], and
    ``clause_of_row`` [R] giving each row's clause index."""

    box: Box
    rows: torch.Tensor
    b: torch.Tensor
    clause_of_row: torch.Tensor
    n_clauses: int

    @staticmethod
    def of(region: Region, dtype: torch.dtype = torch.float32) -> RegionTensors:
        rows = [c.A for c in region.clauses if c.A.shape[0]]
        if len(rows) != len(region.clauses):
            raise ValueError("a clause without output constraints cannot be repaired (every output violates it)")
        clause_of_row = np.concatenate([np.full(c.A.shape[0], k) for k, c in enumerate(region.clauses)])
        return RegionTensors(region.box, torch.tensor(np.vstack(rows), dtype=dtype),
                             torch.tensor(np.concatenate([c.b for c in region.clauses]), dtype=dtype),
                             torch.from_numpy(clause_of_row).long(), len(region.clauses))

    def clause_margins(self, y: torch.Tensor) -> torch.Tensor:
        """[B, n_clauses]: ``max_rows(A·y - b)`` per clause; <= 0 means the clause is violated."""
        row_values = y @ self.rows.to(y.dtype).T - self.b.to(y.dtype)
        out = torch.full((y.shape[0], self.n_clauses), -torch.inf, dtype=y.dtype, device=y.device)
        index = self.clause_of_row.to(y.device).expand_as(row_values)
        return out.scatter_reduce(1, index, row_values, reduce="amax", include_self=True)

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """[B]: the property margin (smallest clause margin); > 0 iff the property holds."""
        return self.clause_margins(y).amin(dim=1)


def uniform_in(box: Box, count: int, rng: np.random.Generator) -> np.ndarray:
    return box.lower + rng.random((count, box.dim)) * (box.upper - box.lower)


def near(points: np.ndarray, box: Box, count_each: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``count_each`` points per row of ``points``: Gaussian with std ``spread``·box width, clipped."""
    if len(points) == 0 or count_each == 0:
        return np.zeros((0, box.dim))
    width = box.upper - box.lower
    cloud = np.repeat(points, count_each, axis=0) + rng.standard_normal((len(points) * count_each, box.dim)) * spread * width
    return np.clip(cloud, box.lower, box.upper)


def default_input_space(spec: Spec, widen: float) -> Box:
    """The hull of the property's boxes, widened by ``widen`` times its width on each side.

    A spec does not say where the network is used outside the property; this is the stand-in
    when the caller gives no input space (ACAS Xu callers pass the normalised operating range).
    """
    lower = np.min([r.box.lower for r in spec.regions], axis=0)
    upper = np.max([r.box.upper for r in spec.regions], axis=0)
    width = np.maximum(upper - lower, 1e-6)
    return Box(lower - widen * width, upper + widen * width)


def contained(box: Box, points: np.ndarray) -> np.ndarray:
    """[N] bool: which rows of ``points`` lie in ``box``."""
    return np.all((points >= box.lower) & (points <= box.upper), axis=1)
