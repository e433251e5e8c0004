"""The VNN-COMP counterexample check, independent of the verifier that produced the witness.

A ``sat`` results file lists ``(X_i v)`` and ``(Y_j v)``. The check replays X in onnxruntime (which
casts it to the model's input type), requires the produced Y to match the listed one (relative
1e-3, as VNN-COMP), X as written to lie in a box of the spec and the output to violate the spec,
both within ``tolerance``: VNN-COMP's absolute 1e-4 (`VNNCOMP_TOLERANCE`), or 0 for its
zero-tolerance variant, which `verirepair bench` applies to every witness.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..network import load_network, run_onnxruntime
from ..spec import parse_vnnlib

Y_RTOL, VNNCOMP_TOLERANCE = 1e-3, 1e-4
_ASSIGNMENT = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def parse_witness(text: str) -> tuple[np.ndarray, np.ndarray]:
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in _ASSIGNMENT.findall(text):
        values[kind][int(index)] = float(value)
    x = np.array([values["X"][i] for i in sorted(values["X"])], dtype=np.float64)
    y = np.array([values["Y"][i] for i in sorted(values["Y"])], dtype=np.float64)
    return x, y


def check_witness(onnx_path: str | Path, vnnlib_path: str | Path, results_text: str,
                  tolerance: float = VNNCOMP_TOLERANCE) -> tuple[bool, str]:
    """(passed, reason) for the witness in a ``sat`` results file."""
    x, y_listed = parse_witness(results_text)
    network = load_network(onnx_path)
    spec = parse_vnnlib(vnnlib_path, n_inputs=network.n_inputs, n_outputs=network.n_outputs)
    if x.size != network.n_inputs or y_listed.size != network.n_outputs:
        return False, f"witness has {x.size} X and {y_listed.size} Y values"
    y = run_onnxruntime(network, x[None, :])[0]
    if not np.allclose(y, y_listed, rtol=Y_RTOL, atol=0.0):
        return False, f"listed Y differs from onnxruntime (max |Δ| = {np.max(np.abs(y - y_listed)):.3g})"
    if not spec.violation_at(x, y, box_tolerance=tolerance, output_tolerance=tolerance):
        return False, f"onnxruntime output does not violate the property at X (tolerance {tolerance:g})"
    return True, "ok"
