"""The shipped models and properties (models/, specs/): reproducible, and verified as expected.

The expected verdicts in specs/expected.csv were established by tools/make_models.py without
verirepair (onnxruntime-confirmed counterexamples; an exact MILP or interval bisection for the
properties that hold), so agreeing with them is a real check, not a golden file of our own output.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from verirepair.network import load_network, run_onnxruntime
from verirepair.spec import parse_vnnlib
from verirepair.verify import VerifySettings, verify_files

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "specs" / "expected.csv"
MODELS = ("collision_avoidance", "digits_classifier", "tanh_controller")


def expected_rows() -> list[dict[str, str]]:
    with EXPECTED.open(newline="") as stream:
        return list(csv.DictReader(stream))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_expected_table_covers_every_model_with_both_verdicts() -> None:
    rows = expected_rows()
    for model in MODELS:
        verdicts = {row["expected"] for row in rows if row["onnx"] == f"models/{model}.onnx"}
        assert verdicts == {"sat", "unsat"}, f"{model}: expected one holding and one violated property, got {verdicts}"
    for row in rows:
        assert (ROOT / row["onnx"]).is_file() and (ROOT / row["vnnlib"]).is_file(), row


def test_make_models_rebuilds_the_shipped_networks(tmp_path: Path) -> None:
    """Training is seeded and single-threaded: two rebuilds give the same bytes, and a rebuild
    computes what the shipped network computes. Bytes are only compared between rebuilds on one
    machine: float kernels differ between CPUs (an AMD EPYC rebuild of collision_avoidance differs
    from the shipped one by 0.5 % of its output scale), so across machines outputs are compared,
    within 2 % of the output scale. Only the three small networks are rebuilt (about 10 s each time)."""
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_models.py"), "--out", str(tmp_path / run),
                        "--models-only", "--family", "small"], check=True, capture_output=True, timeout=300)
    for model in MODELS:
        name = f"{model}.onnx"
        first, second = tmp_path / "a" / "models" / name, tmp_path / "b" / "models" / name
        assert sha256(first) == sha256(second), f"{name}: two rebuilds differ"
        shipped_network = load_network(ROOT / "models" / name)
        points = np.random.default_rng(1).uniform(0.0, 1.0, size=(64, shipped_network.n_inputs)).astype(np.float32)
        shipped = run_onnxruntime(shipped_network, points)  # one onnxruntime session per file
        rebuilt = run_onnxruntime(load_network(first), points)
        scale = float(np.abs(shipped).max())
        assert float(np.abs(rebuilt - shipped).max()) <= 0.02 * scale, f"{name}: the rebuild computes something else"


def onnxruntime_output(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.astype(np.float32).reshape(1, -1)}
    return np.asarray(session.run(None, feed)[0], dtype=np.float64).reshape(-1)


@pytest.mark.parametrize("row", expected_rows(), ids=lambda row: Path(row["vnnlib"]).stem)
def test_shipped_property_gets_expected_verdict(row: dict[str, str]) -> None:
    onnx_path, vnnlib_path = ROOT / row["onnx"], ROOT / row["vnnlib"]
    verdict = verify_files(onnx_path, vnnlib_path, VerifySettings(timeout=60))
    assert verdict.status == row["expected"], f"{verdict.status} by {verdict.decided_by} ({verdict.notes})"
    if verdict.status == "sat":
        counterexample = verdict.counterexample
        assert counterexample is not None
        x = counterexample.x
        assert np.array_equal(x.astype(np.float32).astype(np.float64), x), "the witness is not a float32 input"
        y = onnxruntime_output(onnx_path, x)  # our own session, on the original file
        np.testing.assert_array_equal(y, counterexample.y)
        assert parse_vnnlib(vnnlib_path).violation_at(x, y), "onnxruntime does not confirm the counterexample"
