"""Result types: a three-valued `Verdict` with the witness inside the ``sat`` value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Status = Literal["sat", "unsat", "unknown", "timeout", "error"]


@dataclass(frozen=True)
class Counterexample:
    """An input in the property's box (float64) and onnxruntime's output on it cast to the model's
    input type; ``moved_by_cast`` counts the coordinates that the cast changed (those whose box
    interval holds no number of that type; see `witness`)."""

    x: np.ndarray
    y: np.ndarray
    moved_by_cast: int = 0


@dataclass(frozen=True)
class Verdict:
    """``rests_on_solver``: an `unsat` some part of which a MILP solver's claim decided (an
    infeasibility, or a proven bound of MILP-refined intermediate bounds) rather than bounds
    computed here with their rounding error; reported as ``trust: solver``."""

    status: Status
    decided_by: str  # e.g. "pgd", "crown", "input-split", "milp", or why undecided
    seconds: float
    counterexample: Counterexample | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    rests_on_solver: bool = False

    def __post_init__(self) -> None:
        if (self.status == "sat") != (self.counterexample is not None):
            raise ValueError("a sat verdict carries a counterexample, and only a sat verdict does")


@dataclass(frozen=True)
class SearchOutcome:
    """What one complete search (input split, ReLU split, MILP) concluded about a region."""

    status: str  # "proven" | "sat" | "unknown" | "timeout"
    counterexample: Counterexample | None
    boxes_bounded: int
    solver_decided: bool = False  # some part of a "proven" rests on a MILP solver's claim
