"""tools/repair_suites.py's own figures: the parameter diff of two ONNX files, per-class accuracy and
the choice of a suite's subset, each against a hand computation."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tool(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    return importlib.import_module("repair_suites")


def write_dense(path: Path, weight: np.ndarray, bias: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
    tensors = {"W": weight, "B": bias} | (extra or {})
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(values.astype(np.float32), name) for name, values in tensors.items()])
    onnx.save(helper.make_model(graph), str(path))


def test_parameters_changed_counts_differing_and_added_entries(tool: ModuleType, tmp_path: Path) -> None:
    weight, bias = np.arange(6.0).reshape(3, 2), np.array([0.5, -0.5])
    write_dense(tmp_path / "a.onnx", weight, bias)
    edited = weight.copy()
    edited[0, 1], edited[2, 0] = 7.0, -1.0
    write_dense(tmp_path / "b.onnx", edited, bias, {"patch": np.zeros((4, 5))})
    assert tool.parameters_changed(tmp_path / "a.onnx", tmp_path / "b.onnx") == (2, 20)
    assert tool.parameters_changed(tmp_path / "a.onnx", tmp_path / "a.onnx") == (0, 0)


def test_per_class_accuracy_and_worst_class(tool: ModuleType) -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2, 2, 2, 0])
    assert tool.per_class_accuracy(predicted, labels) == {0: 2 / 3, 1: 1 / 2, 2: 3 / 4}


def test_subset_takes_first_violated_and_every_held(tool: ModuleType, tmp_path: Path) -> None:
    rows = ["../net.onnx,p0.vnnlib,30", "../net.onnx,p1.vnnlib,30", "../net.onnx,p2.vnnlib,30",
            "../net.onnx,p3.vnnlib,30", "../net.onnx,p4.vnnlib,30"]
    (tmp_path / "instances.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "expected.csv").write_text("onnx,vnnlib,result\n../net.onnx,p4.vnnlib,unsat\n"
                                           "../net.onnx,p1.vnnlib,sat\n../net.onnx,p3.vnnlib,sat\n")
    network, every = tool.suite_properties(tmp_path, None)
    assert network == (tmp_path.parent / "net.onnx").resolve()
    assert [p.name for p in every] == [f"p{i}.vnnlib" for i in range(5)]
    _, subset = tool.suite_properties(tmp_path, 1)
    assert [p.name for p in subset] == ["p1.vnnlib", "p4.vnnlib"]
