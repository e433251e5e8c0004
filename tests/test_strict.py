"""Strict VNN-LIB comparisons: a witness must satisfy them strictly; proofs may read them as non-strict.

y = x0 + 2·x1 − x2 + 0.5 over [-1, 1]³ reaches 4.5 exactly at the corner (1, 1, −1) and nowhere
above (exact: the sum of |coefficients| plus the bias), so ``Y_0 > 4.5`` holds at no input. It used
to be answered `sat` with that corner, where Y_0 = 4.5.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnx_factory import build_model, save

from verirepair.network import load_network
from verirepair.spec import parse_vnnlib_text
from verirepair.verify import VerifySettings, verify

COEFFICIENTS, BIAS = [1.0, 2.0, -1.0], 0.5
EXACT_MAXIMUM = sum(abs(Fraction(c)) for c in COEFFICIENTS) + Fraction(BIAS)  # 9/2, all dyadic: exact in float32


def spec_text(threshold: str, comparison: str, input_comparison: str = "<=") -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} -1)) (assert ({input_comparison} X_{i} 1))" for i in range(3)]
    return "\n".join(lines + [f"(assert ({comparison} Y_0 {threshold}))"])


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weight = np.array([COEFFICIENTS], dtype=np.float32)
    model = build_model([helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], [("x", [1, 3])], [("y", [1, 1])],
                        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.array([BIAS], dtype=np.float32), "b")])
    return save(model, tmp_path_factory.mktemp("strict") / "linear.onnx")


def test_strict_threshold_at_the_exact_maximum_is_never_sat(linear: Path) -> None:
    assert EXACT_MAXIMUM == Fraction(9, 2)
    verdict = verify(load_network(linear), parse_vnnlib_text(spec_text("4.5", ">")), VerifySettings(timeout=3))
    assert verdict.status != "sat", verdict  # unsat is right; without exact arithmetic it may be undecided


def test_non_strict_threshold_at_the_exact_maximum_is_sat_at_the_corner(linear: Path) -> None:
    verdict = verify(load_network(linear), parse_vnnlib_text(spec_text("4.5", ">=")), VerifySettings(timeout=10))
    assert verdict.status == "sat" and verdict.counterexample is not None
    assert verdict.counterexample.x.tolist() == [1.0, 1.0, -1.0] and verdict.counterexample.y[0] == 4.5


def test_strict_violation_has_a_strict_witness(linear: Path) -> None:
    verdict = verify(load_network(linear), parse_vnnlib_text(spec_text("4.4", ">")), VerifySettings(timeout=10))
    assert verdict.status == "sat" and verdict.counterexample is not None
    assert verdict.counterexample.y[0] > 4.4


def test_open_input_bounds_keep_the_witness_off_the_boundary(linear: Path) -> None:
    """With ``X_i < 1`` the corner is outside the box; 4.5 − ε is still reached strictly inside."""
    verdict = verify(load_network(linear), parse_vnnlib_text(spec_text("4.4", ">=", "<")), VerifySettings(timeout=10))
    assert verdict.status == "sat" and verdict.counterexample is not None
    assert np.all(verdict.counterexample.x < 1.0) and verdict.counterexample.y[0] >= 4.4
