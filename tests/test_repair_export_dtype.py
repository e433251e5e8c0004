"""Every repair export writes a file other verifiers read: constants in the original's element type,
no ``Cast``, the original's input and output declarations; and the file as written is what is proven."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F
from test_repair_loop import SPEC

from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import (
    RepairSettings,
    RepairStrategy,
    check_and_fix,
    strategy_named,
)
from verirepair.repair.reassure.boxes import BoxPatchSettings, BoxPatchStrategy
from verirepair.repair.reassure.beside import patched_model
from verirepair.repair.reassure.export import mlp_to_onnx
from verirepair.repair.reassure.regions import ReluMlp
from verirepair.verify import VerifySettings, verify_files

# Every registered strategy that writes ONNX files of its own ("auto" picks among these).
EXPORTING = ["reassure", "reassure-boxes", "birdnn", "birdnn-retrain", "birdnn-finetune"]
# Those expected to prove the small violated network below within the budget (the others get a
# short one: their last candidate is checked all the same).
PROVING = {"reassure", "reassure-boxes", "birdnn"}


def _strategy(name: str) -> RepairStrategy:
    """The registered strategy; box patches with at most 32 boxes, as in the loop's tests, to stay quick."""
    return BoxPatchStrategy(BoxPatchSettings(max_boxes=32)) if name == "reassure-boxes" else strategy_named(name)


def _floating_constants(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(name, element type) of every floating initializer and Constant node value."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return [(t.name, t.data_type) for t in tensors if np.issubdtype(numpy_helper.to_array(t).dtype, np.floating)]


def _assert_like_the_original(written: Path, original: Path) -> None:
    model, before = onnx.load(str(written)), onnx.load(str(original))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node if n.op_type == "Cast"] == []
    element = before.graph.input[0].type.tensor_type.elem_type
    assert _floating_constants(model) and all(t == element for _, t in _floating_constants(model))
    # Integer initializers only as the shape of a Reshape.
    shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    assert {t.name for t in model.graph.initializer} - {n for n, _ in _floating_constants(model)} <= shapes
    assert [v.SerializeToString() for v in model.graph.input] == [v.SerializeToString() for v in before.graph.input]
    assert [v.SerializeToString() for v in model.graph.output] == [v.SerializeToString() for v in before.graph.output]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.vnnlib"
    spec.write_text(SPEC)
    return {"spec": spec, "violated": F.save(F.mlp(2, 4, 3, seed=4), tmp_path / "violated.onnx")}


@pytest.mark.parametrize("name", EXPORTING)
def test_repaired_file_keeps_the_element_type_and_is_proven_as_written(name, files, tmp_path):
    out, kept = tmp_path / "fixed.onnx", tmp_path / "unproven.onnx"
    settings = RepairSettings(budget=120 if name in PROVING else 20, verify_timeout=60, output=out, keep_unproven=kept, side_effect_samples=200,
                              polish_attempts=0)
    report = check_and_fix(files["violated"], files["spec"], _strategy(name), settings)
    if name in PROVING:
        assert report.status == "repaired"
    written = out if report.status == "repaired" else kept
    assert written.exists(), report.notes
    _assert_like_the_original(written, files["violated"])
    # onnxruntime runs the file in float32 arithmetic; verirepair's import of it (float64) agrees
    # up to float32 rounding of the largest output.
    x = np.random.default_rng(0).uniform(-1, 1, (64, 2))
    repaired = load_network(written)
    ort = run_onnxruntime(repaired, x)
    ours = repaired.forward(torch.from_numpy(x)).detach().numpy()
    assert np.max(np.abs(ours - ort)) <= 1e-5 + 1e-4 * np.max(np.abs(ort))
    if report.status == "repaired":
        assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"


def test_reassure_export_of_a_float64_model_stays_float64(files, tmp_path):
    """The element type follows the original: a float64 model gets float64 constants."""
    model = onnx.load(str(files["violated"]))
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    original = F.save(model, tmp_path / "violated64.onnx")
    out = tmp_path / "fixed64.onnx"
    report = check_and_fix(original, files["spec"], strategy_named("reassure"),
                           RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=200))
    assert report.status == "repaired"
    _assert_like_the_original(out, original)
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"


def test_reassure_export_of_acas_xu_keeps_its_declarations_and_outputs(benchmarks: Path, tmp_path: Path) -> None:
    """A [1, 1, 1, 5] input (flattened inside) and the original's own input/output declarations;
    onnxruntime gives the original's outputs (the original graph beside a zero patch)."""
    path = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_1_batch_2000.onnx"
    original = load_network(path)
    written = tmp_path / "acas.onnx"
    zero_patch = ReluMlp((np.zeros((3, 5)), np.zeros((5, 3))), (np.zeros(3), np.zeros(5)))
    onnx.save(patched_model(onnx.load(str(path)), mlp_to_onnx(zero_patch, original), original), str(written))
    model, before = onnx.load(str(written)), onnx.load(str(path))
    assert all(t == onnx.TensorProto.FLOAT for _, t in _floating_constants(model))
    assert "Cast" not in {n.op_type for n in model.graph.node}
    declared = next(v for v in model.graph.input if v.name == original.input_name)  # IR 3: initializers are inputs too
    assert declared == next(v for v in before.graph.input if v.name == original.input_name)
    assert list(model.graph.output) == list(before.graph.output)
    x = np.random.default_rng(9).uniform(-0.5, 0.5, size=(32, 5))
    np.testing.assert_allclose(run_onnxruntime(load_network(written), x), run_onnxruntime(original, x), rtol=1e-5, atol=1e-6)
