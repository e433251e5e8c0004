"""Counterexample validation: every `sat` is replayed in onnxruntime on the original file."""

from __future__ import annotations

import numpy as np

from ..network import Network, run_onnxruntime
from ..spec import Box, Spec
from .result import Counterexample


def cast_inside(x: np.ndarray, box: Box, dtype: np.dtype) -> np.ndarray:
    """``x`` cast to the model's input dtype, nudged by one ulp where the cast left the box."""
    low = box.lower.astype(dtype)
    low = np.where(low.astype(np.float64) < box.lower, np.nextafter(low, np.inf, dtype=dtype), low)
    high = box.upper.astype(dtype)
    high = np.where(high.astype(np.float64) > box.upper, np.nextafter(high, -np.inf, dtype=dtype), high)
    return np.clip(np.asarray(x, dtype=np.float64).reshape(-1).astype(dtype), low, high)


def confirmed_counterexample(network: Network, spec: Spec, box: Box, x: np.ndarray) -> Counterexample | None:
    """The counterexample at ``x`` if onnxruntime confirms it with zero tolerance, else None."""
    point = cast_inside(x, box, network.input_dtype).astype(np.float64)
    if not box.contains(point):
        return None
    y = run_onnxruntime(network, point[None, :])[0]
    if not spec.violation_at(point, y):
        return None
    return Counterexample(point, y)


def format_witness(counterexample: Counterexample) -> str:
    """The VNN-COMP witness block ``((X_0 v) ... (Y_m v))``."""
    rows = [f"(X_{i} {float(v)!r})" for i, v in enumerate(counterexample.x)]
    rows += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(counterexample.y)]
    return "(" + "\n ".join(rows) + ")"
