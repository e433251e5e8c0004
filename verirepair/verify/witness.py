"""Counterexample validation: every `sat` is replayed in onnxruntime on the original file.

The semantics follow VNN-COMP's witness check: the witness X, as written, lies in the box exactly
(the box is a set of real numbers); Y is onnxruntime's output for X cast to the model's input type;
Y violates the property exactly. Where a coordinate's interval holds a number of the input type,
the witness takes one, so the cast changes nothing. Where it holds none (a zero-width or very
narrow interval at a value such as -0.42244523149053587 in a float32 model), the witness writes the
box value itself and onnxruntime runs its cast; `Counterexample.moved_by_cast` counts those
coordinates, and the results say so.
"""

from __future__ import annotations

import numpy as np

from ..network import Network, run_onnxruntime
from ..spec import Box, Spec
from .result import Counterexample


def float64_bounds(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate, the smallest and largest float64 number inside the box (an open side moves
    one float64 step inward)."""
    return (np.where(box.open_lower, np.nextafter(box.lower, np.inf), box.lower),
            np.where(box.open_upper, np.nextafter(box.upper, -np.inf), box.upper))


def representable_bounds(box: Box, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate, the smallest and largest number of ``dtype`` inside the box (as float64);
    lower > upper where the coordinate's interval holds no such number."""
    lower, upper = float64_bounds(box)
    low = lower.astype(dtype)
    low = np.where(low.astype(np.float64) < lower, np.nextafter(low, np.inf, dtype=dtype), low)
    high = upper.astype(dtype)
    high = np.where(high.astype(np.float64) > upper, np.nextafter(high, -np.inf, dtype=dtype), high)
    return low.astype(np.float64), high.astype(np.float64)


def witness_point(x: np.ndarray, box: Box, dtype: np.dtype) -> np.ndarray:
    """``x`` moved into the box (float64): each coordinate becomes the nearest number of ``dtype``
    inside its interval, or, where the interval holds none, the nearest float64 point of the interval."""
    inside = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), *float64_bounds(box))
    low, high = representable_bounds(box, dtype)
    cast = np.clip(inside.astype(dtype).astype(np.float64), low, high)
    return np.where(low <= high, cast, inside)


def confirmed_counterexample(network: Network, spec: Spec, box: Box, x: np.ndarray) -> Counterexample | None:
    """The counterexample at ``x`` if onnxruntime confirms it with zero tolerance, else None."""
    point = witness_point(x, box, network.input_dtype)
    if not box.contains(point):
        return None
    y = run_onnxruntime(network, point[None, :])[0]
    if not spec.violation_at(point, y):
        return None
    moved = int(np.count_nonzero(point.astype(network.input_dtype).astype(np.float64) != point))
    return Counterexample(point, y, moved)


def format_witness(counterexample: Counterexample) -> str:
    """The VNN-COMP witness block ``((X_0 v) ... (Y_m v))``."""
    rows = [f"(X_{i} {float(v)!r})" for i, v in enumerate(counterexample.x)]
    rows += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(counterexample.y)]
    return "(" + "\n ".join(rows) + ")"
