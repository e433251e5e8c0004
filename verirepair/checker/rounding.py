"""Moving a float64 result one float outward.

Round to nearest leaves a result within half a spacing of the exact value, on the side it lies
(also at a power of two, where the spacing below is half the one above), so the next float beyond
the rounded result is beyond the exact value: ``down(fl(a ∘ b)) <= a ∘ b <= up(fl(a ∘ b))`` for a
single operation ∘ on floats.
"""

from __future__ import annotations

import numpy as np


def down(value: np.ndarray) -> np.ndarray:
    return np.nextafter(value, -np.inf)


def up(value: np.ndarray) -> np.ndarray:
    return np.nextafter(value, np.inf)
