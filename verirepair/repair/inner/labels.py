"""The label a classifier property protects: the output that must stay the largest.

A region of a robustness property is violated when some other output reaches the protected one:
every clause holds a row ``a·(y_j - y_k) >= 0`` written as ``a·(y_k - y_j) <= 0`` (``a > 0``,
right-hand side 0). The protected label ``k`` is the output with the positive coefficient in such a
row of every clause; INNER's "right label" for a failing input in that region's box.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ...spec import Region, Spec


def _labels_kept_by_row(row: np.ndarray, bound: float) -> set[int]:
    """The ``k`` of a row ``a·(y_k - y_j) <= 0`` (empty when the row has another form)."""
    nonzero = np.flatnonzero(row)
    if bound != 0 or len(nonzero) != 2 or row[nonzero[0]] != -row[nonzero[1]]:
        return set()
    return {int(nonzero[0]) if row[nonzero[0]] > 0 else int(nonzero[1])}


def protected_label(region: Region) -> int | None:
    """The output ``region`` keeps the largest, or None when its clauses do not say one."""
    common: set[int] | None = None
    for clause in region.clauses:
        kept = set().union(*(_labels_kept_by_row(row, float(b)) for row, b in zip(clause.A, clause.b)))
        common = kept if common is None else common & kept
    return next(iter(common)) if common is not None and len(common) == 1 else None


def protected_labels(spec: Spec) -> tuple[int, ...]:
    """One protected label per region of ``spec``; a property of another form is refused."""
    labels = tuple(protected_label(region) for region in spec.regions)
    if any(label is None for label in labels):
        raise UnsupportedError(spec.source, "property", "INNER repairs classifier properties (each region keeps one "
                                                        "output the largest: clauses of the form Y_k - Y_j <= 0)")
    return labels  # type: ignore[return-value]
