"""Repair keeps the architecture: BIRDNN on a CNN writes the original graph with other weights
(same nodes, op types, value names, initializer names, element types and shapes), onnxruntime runs
it, and the verifier proves the property on the written file when the loop says it is repaired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx_factory import save
from repair_nets import architecture, small_cnn

from verirepair.network import load_network, read_onnx_model, run_onnxruntime
from verirepair.repair import RepairProblem, RepairSettings, check_and_fix
from verirepair.repair.birdnn import BirdnnFinetune, BirdnnRetrain, BirdnnSettings
from verirepair.spec import parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify

# small_cnn(3) on the box of radius 0.01 around CENTRE: its first output ranges over about
# [-0.414, -0.384] (sampled), so "Y_0 >= -0.39" is violated on part of the box. (A constant image
# would tie every max-pool window, which no bound separates.)
SEED, RADIUS, THRESHOLD = 3, 0.01, -0.39
CENTRE = np.random.default_rng(1).uniform(0, 1, 36)


def _property(path: Path) -> Path:
    lines = [f"(declare-const X_{i} Real)" for i in range(36)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i in range(36):
        lines += [f"(assert (>= X_{i} {float(CENTRE[i] - RADIUS)!r}))", f"(assert (<= X_{i} {float(CENTRE[i] + RADIUS)!r}))"]
    lines.append(f"(assert (>= Y_0 {THRESHOLD}))")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def cnn_problem(tmp_path: Path) -> tuple[Path, Path]:
    return save(small_cnn(SEED), tmp_path / "cnn.onnx"), _property(tmp_path / "cnn.vnnlib")


def _sampled_violations(path: Path, spec_path: Path, count: int, seed: int) -> int:
    network = load_network(path)
    spec = parse_vnnlib(spec_path, n_inputs=36, n_outputs=2)
    x = np.random.default_rng(seed).uniform(CENTRE - RADIUS, CENTRE + RADIUS, size=(count, 36))
    y = run_onnxruntime(network, x)
    return sum(spec.violation_at(p, q) for p, q in zip(x, y))


@pytest.mark.parametrize("strategy", [BirdnnRetrain, BirdnnFinetune], ids=["retrain", "finetune"])
def test_a_birdnn_candidate_for_a_cnn_is_the_original_graph_with_other_weights(strategy, cnn_problem) -> None:
    model_path, spec_path = cnn_problem
    assert _sampled_violations(model_path, spec_path, 2000, seed=1) > 0
    network = load_network(model_path)
    spec = parse_vnnlib(spec_path, n_inputs=36, n_outputs=2)
    candidate = strategy(BirdnnSettings(max_seconds=20)).repair(RepairProblem(network, spec, ()), None, Deadline(60))
    model = candidate.model
    original = read_onnx_model(model_path)
    assert architecture(model) == architecture(original)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer)
    changed = [i.name for i, j in zip(model.graph.initializer, original.graph.initializer)
               if not np.array_equal(onnx.numpy_helper.to_array(i), onnx.numpy_helper.to_array(j))]
    assert changed  # the repair moved some weights
    if strategy is BirdnnFinetune:
        assert changed == ["fc2.weight"]  # the one weight that scales a hidden neuron of this CNN


def test_birdnn_repair_of_a_cnn_keeps_its_graph_and_is_proven_on_the_written_file(cnn_problem, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model_path, spec_path = cnn_problem
    output, unproven = tmp_path / "repaired.onnx", tmp_path / "repaired_unproven.onnx"
    strategy = BirdnnFinetune(BirdnnSettings(domain_samples=5000, outside_samples=2000, target_margin=3.0))
    report = check_and_fix(model_path, spec_path, strategy,
                           RepairSettings(budget=150, verify_timeout=30, output=output, keep_unproven=unproven,
                                          side_effect_samples=500))
    written = [path for path in (output, unproven) if path.exists()]
    assert written
    for path in written:  # whatever the outcome, a written file has the original graph
        assert architecture(read_onnx_model(path)) == architecture(read_onnx_model(model_path))
    assert report.status == "repaired", [i.verdict for i in report.iterations]
    repaired = load_network(output)
    spec = parse_vnnlib(spec_path, n_inputs=36, n_outputs=2)
    assert verify(repaired, spec, VerifySettings(timeout=45)).status == "unsat"
    assert _sampled_violations(output, spec_path, 4000, seed=2) == 0
