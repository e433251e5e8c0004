"""The `Spec` type: a disjunction of (input box, output polytope) violation regions.

A VNN-LIB file describes the *unsafe* set. After normalisation to disjunctive normal form it is a
list of `Region`s; each region is an input `Box` plus a list of `Clause`s, and a clause
``A·y <= b`` (all rows at once) is one way the output can violate the property. The property is
violated (``sat``) iff some region has a point ``x`` in its box whose output ``y`` satisfies all rows
of at least one of its clauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """Axis-aligned input box ``lower <= x <= upper`` over the flattened input (float64), a set of
    real numbers. A side is open (``<`` instead of ``<=``) where ``open_lower``/``open_upper`` say so
    (a strict VNN-LIB bound); proofs work on the closed box, which holds more points (sound), and a
    witness must lie in the box as it is (`contains`)."""

    lower: np.ndarray
    upper: np.ndarray
    open_lower: np.ndarray = None  # type: ignore[assignment]  # bool per input; None: all closed
    open_upper: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError("Box lower/upper must be 1-D arrays of the same length")
        for side in ("open_lower", "open_upper"):
            value = getattr(self, side)
            mask = np.zeros(self.lower.shape, dtype=bool) if value is None else np.asarray(value, dtype=bool)
            if mask.shape != self.lower.shape:
                raise ValueError(f"Box {side} must have one flag per input")
            object.__setattr__(self, side, mask)

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    def contains(self, x: np.ndarray, tolerance: float = 0.0) -> bool:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        low, high = self.lower - tolerance, self.upper + tolerance
        above = np.where(self.open_lower, x > low, x >= low)
        below = np.where(self.open_upper, x < high, x <= high)
        return bool(np.all(above) and np.all(below))


@dataclass(frozen=True)
class Clause:
    """One conjunction of output constraints: the violation holds where ``A @ y <= b`` row-wise
    (``<`` on the rows marked ``strict``; proofs read every row as ``<=``, which is sound)."""

    A: np.ndarray  # shape [rows, n_outputs], float64
    b: np.ndarray  # shape [rows], float64
    strict: np.ndarray = None  # type: ignore[assignment]  # bool per row; None: none strict

    def __post_init__(self) -> None:
        rows = np.asarray(self.b).reshape(-1).shape
        mask = np.zeros(rows, dtype=bool) if self.strict is None else np.asarray(self.strict, dtype=bool).reshape(-1)
        if mask.shape != rows:
            raise ValueError("Clause strict must have one flag per row")
        object.__setattr__(self, "strict", mask)

    def violated_by(self, y: np.ndarray, tolerance: float = 0.0) -> bool:
        """True when output ``y`` satisfies every row, i.e. ``y`` is unsafe."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        activity, limit = self.A @ y, self.b + tolerance
        return bool(np.all(np.where(self.strict, activity < limit, activity <= limit)))


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


def disjunction_of(specs: Sequence[Spec], source: str) -> Spec:
    """One `Spec` violated wherever one of ``specs`` is (their regions side by side), named
    ``source``; a single spec is returned as it is. Every spec must have the same sizes."""
    if len(specs) == 1:
        return specs[0]
    sizes = {(spec.n_inputs, spec.n_outputs) for spec in specs}
    if len(sizes) != 1:
        raise ValueError(f"specs of different sizes (inputs, outputs) cannot be joined: {sorted(sizes)}")
    n_inputs, n_outputs = sizes.pop()
    return Spec(n_inputs, n_outputs, tuple(region for spec in specs for region in spec.regions), source)
