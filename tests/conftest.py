"""Shared fixtures: the benchmark folder and tiny ONNX models written to temporary files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `import onnx_factory`

import onnx_factory  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The VNN-COMP benchmark data next to the repository; tests using it skip when it is absent."""
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS} (expected ../shared/benchmarks next to the repo)")
    return BENCHMARKS


@pytest.fixture(scope="module")
def single_torch_thread():  # type: ignore[no-untyped-def]
    """One torch thread for a module, restored afterwards: on tiny tensors the thread pool only
    adds latency, and a search budgeted in CPU seconds then does the same work as in wall seconds.
    Modules take it with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`onnx_factory.analytic_mlp` (2 inputs, 2 outputs, closed form known) saved as an ONNX file."""
    return onnx_factory.save(onnx_factory.analytic_mlp(), tmp_path_factory.mktemp("tiny") / "tiny_mlp.onnx")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for factory models (tests save there under distinct names)."""
    return tmp_path_factory.mktemp("models")
