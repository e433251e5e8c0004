"""The `Spec` type: a disjunction of (input box, output polytope) violation regions.

A VNN-LIB file describes the *unsafe* set. After normalisation to disjunctive normal form it is a
list of `Region`s; each region is an input `Box` plus a list of `Clause`s, and a clause
``A·y <= b`` (all rows at once) is one way the output can violate the property. The property is
violated (``sat``) iff some region has a point ``x`` in its box whose output ``y`` satisfies all rows
of at least one of its clauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """Axis-aligned input box ``lower <= x <= upper`` over the flattened input (float64)."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError("Box lower/upper must be 1-D arrays of the same length")

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    def contains(self, x: np.ndarray, tolerance: float = 0.0) -> bool:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return bool(np.all(x >= self.lower - tolerance) and np.all(x <= self.upper + tolerance))


@dataclass(frozen=True)
class Clause:
    """One conjunction of output constraints: the violation holds where ``A @ y <= b`` row-wise."""

    A: np.ndarray  # shape [rows, n_outputs], float64
    b: np.ndarray  # shape [rows], float64

    def violated_by(self, y: np.ndarray, tolerance: float = 0.0) -> bool:
        """True when output ``y`` satisfies every row, i.e. ``y`` is unsafe."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return bool(np.all(self.A @ y <= self.b + tolerance))


@dataclass(frozen=True)
class Region:
    box: Box
    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class Spec:
    n_inputs: int
    n_outputs: int
    regions: tuple[Region, ...]
    source: str = "<memory>"

    def violation_at(self, x: np.ndarray, y: np.ndarray, box_tolerance: float = 0.0,
                     output_tolerance: float = 0.0) -> bool:
        """True when input ``x`` lies in some region's box and ``y`` violates one of its clauses."""
        return any(
            region.box.contains(x, box_tolerance)
            and any(c.violated_by(y, output_tolerance) for c in region.clauses)
            for region in self.regions
        )
