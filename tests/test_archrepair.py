"""ArchRepair: block localisation on a planted damage, the searched cell exported into the
original graph (checked in onnxruntime and by the bound graph), and the end-to-end repair."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnx_factory import build_model
from repair_nets import small_cnn

from verirepair import datasets
from verirepair.bounds import BoundEngine, build_graph
from verirepair.errors import InputError, SettingsError
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairSettings, check_and_fix, registry
from verirepair.repair.archrepair import ArchRepair, ArchRepairSettings
from verirepair.repair.archrepair import finetune as finetune_module
from verirepair.repair.archrepair.blocks import Block, blocks_of
from verirepair.repair.archrepair.export import PREFIX, spliced_model
from verirepair.repair.archrepair.finetune import accuracy_rounds, cell_module, finetune
from verirepair.repair.archrepair.localise import (
    BlockScore,
    block_scores,
    most_vulnerable,
)
from verirepair.repair.archrepair.objective import (
    RepairSamples,
    crown_margins,
    regions_at_risk,
    verifiable_shortfall,
)
from verirepair.repair.archrepair.operations import (
    OPERATIONS,
    check_operations,
    widened,
)
from verirepair.repair.archrepair.search import (
    Cell,
    DiscreteCell,
    SearchedNetwork,
    original_operation,
)
from verirepair.repair.archrepair.strategy import searchable
from verirepair.repair.parameters import TrainableNetwork, exported_model
from verirepair.repair.pointwise import label_spec
from verirepair.repair.strategy import RepairCandidate, RepairProblem
from verirepair.spec import parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_classifier.onnx"
ROBUST = ROOT / "specs" / "digits_robust_0_eps0.12.vnnlib"
SIZES = [64, 24, 24, 24, 10]  # three dense-relu blocks and the output layer


def _mlp(weights: list[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    nodes, inits, current = [], [], "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{k}"), numpy_helper.from_array(b.astype(np.float32), f"b{k}")]
        out = "y" if k == len(weights) - 1 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [out], transB=1, name=f"gemm{k}"))
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"], name=f"relu{k}"))
            current = f"h{k}"
    return build_model(nodes, [("x", [1, SIZES[0]])], [("y", [1, SIZES[-1]])], inits)


@pytest.fixture(scope="module")
def trained() -> list[tuple[np.ndarray, np.ndarray]]:
    """A 3-block ReLU MLP trained on the 8x8 digits (full batch, a few hundred steps)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = datasets.digits("train")
    x, y = torch.tensor(train.x, dtype=torch.float32), torch.tensor(train.y)
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(SIZES)]
    optimiser = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=1e-2)
    for _ in range(300):
        h = x
        for layer in layers[:-1]:
            h = torch.relu(layer(h))
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(layers[-1](h), y).backward()
        optimiser.step()
    return [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()) for layer in layers]


@pytest.mark.parametrize("damaged", [0, 1, 2])
def test_localisation_ranks_the_planted_block_first(trained, damaged: int, tmp_path: Path) -> None:
    """One neuron of one block is blown up (weights and bias ×5, bias raised): the inputs it now
    fires on are misclassified. The block holding it must score highest."""
    weights = [(w.copy(), b.copy()) for w, b in trained]
    w, b = weights[damaged]
    neuron = int(np.argmax(np.abs(weights[damaged + 1][0]).sum(axis=0)))  # the one read most strongly
    w[neuron] *= 5.0
    b[neuron] = 5.0 * b[neuron] + 0.5
    onnx.save(_mlp(weights), str(tmp_path / "damaged.onnx"))
    network = load_network(tmp_path / "damaged.onnx")
    module = TrainableNetwork(network)
    train = datasets.digits("train")
    x, y = torch.tensor(train.x, dtype=torch.float32), torch.tensor(train.y)
    with torch.no_grad():
        failing = module(x).argmax(dim=1) != y
    assert int(failing.sum()) >= 50  # the damage does cause failures
    fail_x, fail_y, pass_x, pass_y = x[failing][:64], y[failing][:64], x[~failing][:64], y[~failing][:64]
    blocks = blocks_of(network)
    assert [block.target for block in blocks] == ["h0", "h1", "h2"]
    scores = block_scores(module, blocks, fail_x, pass_x,
                          lambda out, rows: torch.nn.functional.cross_entropy(out, fail_y[rows], reduction="none"),
                          lambda out, rows: torch.nn.functional.cross_entropy(out, pass_y[rows], reduction="none"))
    assert most_vulnerable(scores).block == blocks[damaged], [(s.forward, s.backward) for s in scores]


def _choose(cell: Cell, first: str, skip: str, last: str) -> DiscreteCell:
    pick = {edge: (name, getattr(cell, edge).candidates[getattr(cell, edge).names.index(name)])
            for edge, name in (("first", first), ("skip", skip), ("last", last))}
    return DiscreteCell(pick["first"], pick["skip"], pick["last"])


def _randomised(cell: torch.nn.Module) -> None:
    """Move every weight away from its start, so that a mixed-up operand would show."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def _outside(model: onnx.ModelProto, block: Block, network) -> tuple[list[bytes], dict[str, tuple[int, bytes]]]:
    """The nodes (serialised) and initializers (type and values) that are not the block's or the cell's."""
    made = {name for node in block.nodes(network) for name in node.outputs}
    nodes = [node.SerializeToString() for node in model.graph.node if not set(node.output) & made and not node.name.startswith(PREFIX)]
    inits = {i.name: (i.data_type, numpy_helper.to_array(i).tobytes()) for i in model.graph.initializer
             if not i.name.startswith(PREFIX) and i.name not in block.weights}
    return nodes, inits


def _check_export(path: Path, tmp_path: Path, block_index: int, names: tuple[str, str, str], widen: int = 1) -> None:
    network = load_network(path)
    block = blocks_of(network)[block_index]
    warm = original_operation(network, block)
    if widen > 1:
        warm = widened(warm, widen, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    cell = Cell(warm, block, ArchRepairSettings())
    _randomised(cell)
    chosen = _choose(cell, *names)
    original = onnx.load(str(path))
    model = spliced_model(original, network, block, chosen)
    out = tmp_path / f"{'-'.join(names)}.onnx"
    onnx.save(model, str(out))
    repaired = load_network(out)
    build_graph(repaired)  # every exported operation is one the bound graph bounds
    x = np.random.default_rng(2).random((16, network.n_inputs))
    with torch.no_grad():
        expected = SearchedNetwork(network, block, chosen)(torch.tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(run_onnxruntime(repaired, x), expected, rtol=1e-4, atol=1e-4)
    assert _outside(model, block, network) == _outside(original, block, network)


@pytest.mark.parametrize("names", [names for names in itertools.product(
    ["original", "dense_relu", "dense_relu_wide", "identity"], ["zero", "identity", "dense_relu"], ["zero", "identity", "dense_relu_wide"])
    if names[1:] != ("zero", "zero")])
def test_exported_dense_cell_matches_the_torch_model_and_keeps_the_rest(names, tmp_path: Path) -> None:
    _check_export(DIGITS, tmp_path, 1, names)


@pytest.mark.parametrize("names", [("original", "zero", "identity"), ("conv3x3_relu", "avgpool3x3", "conv1x1_relu"),
                                   ("conv1x1_relu", "identity", "avgpool3x3"), ("identity", "conv3x3_relu", "zero"),
                                   ("avgpool3x3", "zero", "conv3x3_relu")])
def test_exported_conv_cell_matches_the_torch_model_and_keeps_the_rest(names, tmp_path: Path) -> None:
    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), str(path))
    assert [b.kind for b in blocks_of(load_network(path))] == ["conv", "conv", "other"]
    _check_export(path, tmp_path, 1, names)


@pytest.mark.parametrize("block_index, names", [(0, ("original", "zero", "identity")), (0, ("original", "zero", "conv3x3_relu")),
                                                (1, ("original", "zero", "avgpool3x3")), (1, ("original", "zero", "conv1x1_relu"))])
def test_exported_strided_conv_cell_matches_the_torch_model_and_keeps_the_rest(block_index, names, tmp_path: Path) -> None:
    """The shipped MNIST CNN's blocks are 4×4 convolutions of stride 2 without padding: the
    original layer keeps that geometry in the cell (`_checked` compares it with the block) and
    in the exported file."""
    path = ROOT / "models" / "mnist_cnn.onnx"
    blocks = blocks_of(load_network(path))
    assert [(b.in_shape, b.out_shape) for b in blocks] == [((1, 28, 28), (4, 13, 13)), ((4, 13, 13), (8, 5, 5))]
    _check_export(path, tmp_path, block_index, names)
    cell = Cell(original_operation(load_network(path), blocks[block_index]), blocks[block_index], ArchRepairSettings())
    assert cell.skip.names == ["zero"]  # no candidate maps the block's input to its smaller output


@pytest.mark.parametrize("path, block_index, names", [
    (DIGITS, 1, ("original", "zero", "identity")), (DIGITS, 1, ("original", "dense_relu", "dense_relu_wide")),
    (ROOT / "models" / "mnist_cnn.onnx", 0, ("original", "zero", "identity")),
    (ROOT / "models" / "mnist_cnn.onnx", 1, ("original", "zero", "conv1x1_relu"))])
def test_exported_widened_cell_matches_the_torch_model_and_keeps_the_rest(path, block_index, names, tmp_path: Path) -> None:
    _check_export(path, tmp_path, block_index, names, widen=3)


@pytest.mark.parametrize("path, block_index", [(DIGITS, 0), (DIGITS, 1), (ROOT / "models" / "mnist_cnn.onnx", 0),
                                               (ROOT / "models" / "mnist_cnn.onnx", 1)])
def test_a_widened_block_starts_as_the_original_with_the_outputs_it_adds(path, block_index) -> None:
    """Before training, the widened layer computes the block (the network's own nodes in float64)
    while its added outputs are live (not all zero), so training can use them."""
    network = load_network(path)
    block = blocks_of(network)[block_index]
    wide = widened(original_operation(network, block), 2, torch.Generator().manual_seed(0)).double()  # type: ignore[arg-type]
    x = torch.rand((32,) + block.in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = network.run_nodes(block.nodes(network), {**network.constants_as(torch.float64, torch.device("cpu")),
                                                        block.source: x})[block.target]
    with torch.no_grad():
        torch.testing.assert_close(wide(x), expected, rtol=1e-9, atol=1e-9)
        added = wide.first(x)[:, block.out_shape[0]:]
    assert added.shape[1] == block.out_shape[0] and bool((added > 0).any())
    assert wide.onnx_ops <= {"Gemm", "Conv", "Relu"}


def test_the_verifiability_term_bounds_every_suite_property_and_only_boxes_at_risk_need_gradients() -> None:
    """Its boxes are the suite's (the repaired property's among them); the boxes left out as not
    at risk are those whose CROWN bound clears twice the target, so leaving them out changes nothing;
    the bounds are those of the verifier's CROWN (`BoundEngine.output_bounds`)."""
    torch.set_num_threads(1)
    network = load_network(DIGITS)
    specs = [parse_vnnlib(ROOT / "specs" / f"digits_robust_0_eps{eps}.vnnlib", n_inputs=64, n_outputs=10)
             for eps in ("0.02", "0.1", "0.12")]
    module = TrainableNetwork(network)
    module.requires_grad_(False)
    settings = ArchRepairSettings(box_samples=200, keep_samples=200)
    alone = RepairSamples(specs[2], module, None, "argmax", settings)
    samples = RepairSamples(specs[2], module, None, "argmax", settings, suite=specs)
    assert len(alone.verified.regions) == 1 and len(samples.verified.regions) == 3
    bounds = crown_margins(module, samples.verified.regions)
    for spec, bound in zip(specs, bounds.tolist()):
        region = spec.regions[0]
        rows = torch.tensor(np.vstack([clause.A for clause in region.clauses]), dtype=torch.float64)
        crown = BoundEngine(build_graph(network)).output_bounds(torch.tensor(region.box.lower).unsqueeze(0),
                                                                torch.tensor(region.box.upper).unsqueeze(0), rows)
        assert bound == pytest.approx(float(crown.lower.min()), rel=1e-4, abs=1e-4)  # one row per clause here
    # a verifiability target putting the limit at 2: the eps 0.02 property's bound clears it, the others do not
    settings = dataclasses.replace(settings, verifiable_target=1.0 / samples.target)
    at_risk = regions_at_risk(module, samples, settings)
    limit = 2 * settings.verifiable_target * samples.target
    assert [r.box for r in at_risk] == [r.box for r, b in zip(samples.verified.regions, bounds.tolist()) if b < limit]
    assert 0 < len(at_risk) < 3, (bounds, limit)
    assert float(verifiable_shortfall(module, samples, settings, at_risk)) == pytest.approx(
        float(verifiable_shortfall(module, samples, settings)), rel=1e-6)


def test_an_operation_the_bound_graph_cannot_bound_is_refused(monkeypatch) -> None:
    with pytest.raises(SettingsError, match="'maxpool3x3' for conv blocks is not one the bound graph supports"):
        ArchRepairSettings(conv_operations=("zero", "maxpool3x3"))
    with pytest.raises(SettingsError, match="does not fit dense blocks"):
        ArchRepairSettings(dense_operations=("zero", "conv3x3_relu"))
    monkeypatch.setitem(OPERATIONS, "softmax", ("dense", lambda a, b: None, frozenset({"Softmax"})))
    with pytest.raises(SettingsError, match=r"exports \['Softmax'\], which the bound graph cannot bound"):
        check_operations(("softmax",), "dense")


def test_archrepair_repairs_the_digits_robustness_property_proven_from_the_file(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train, held_out = datasets.digits("train"), datasets.digits("held_out")
    output = tmp_path / "repaired.onnx"
    report = check_and_fix(DIGITS, ROBUST, registry.strategy_named("archrepair"),
                           RepairSettings(budget=240, verify_timeout=60, output=output, side_effect_samples=500,
                                          data=(train.x, train.y)))
    assert report.status == "repaired", [i.verdict for i in report.iterations]
    spec = parse_vnnlib(ROBUST, n_inputs=64, n_outputs=10)
    repaired = load_network(output)
    assert verify(repaired, spec, VerifySettings(timeout=60)).status == "unsat"
    before = np.mean(run_onnxruntime(load_network(DIGITS), held_out.x).argmax(axis=1) == held_out.y)
    after = np.mean(run_onnxruntime(repaired, held_out.x).argmax(axis=1) == held_out.y)
    assert after >= before - 0.01  # the repair keeps the classifier (measured: 97.1 % -> 96.9 %, one image of 450)
    network = load_network(DIGITS)
    assert set(report.iterations[0].details["block_scores"]) == {b.target for b in blocks_of(network)}
    chosen = next(b for b in blocks_of(network) if report.iterations[0].details["block"] == b.describe(network))
    assert _outside(onnx.load(str(output)), chosen, network) == _outside(onnx.load(str(DIGITS)), chosen, network)


def test_archrepair_repairs_a_cnn_through_a_conv_cell_proven_from_the_file(tmp_path: Path) -> None:
    """The CNN property of the architecture tests (a threshold just inside the outputs' range on a
    small box): a conv block is searched and its cell spliced in; the written file is proven."""
    from test_repair_architecture import SEED, _property, _sampled_violations

    torch.set_num_threads(1)
    model_path, spec_path = tmp_path / "cnn.onnx", _property(tmp_path / "cnn.vnnlib")
    onnx.save(small_cnn(SEED), str(model_path))
    output = tmp_path / "repaired.onnx"
    report = check_and_fix(model_path, spec_path, registry.strategy_named("archrepair"),
                           RepairSettings(budget=150, verify_timeout=30, output=output, side_effect_samples=500))
    assert report.status == "repaired", [i.verdict for i in report.iterations]
    assert "(Conv-Relu," in str(report.iterations[0].details["block"])  # the pooling-dense block cannot be searched
    assert verify(load_network(output), parse_vnnlib(spec_path, n_inputs=36, n_outputs=2), VerifySettings(timeout=45)).status == "unsat"
    assert _sampled_violations(output, spec_path, 4000, seed=2) == 0


def _finetuned_accuracy(damaged: Path, spec, settings: ArchRepairSettings, train: datasets.LabelledImages,
                        tmp_path: Path) -> float:
    """Block 1 of ``damaged`` as a warm-started cell, fine-tuned with the training digits (and
    their labels) as keep inputs; the training accuracy of the exported file in onnxruntime."""
    network = load_network(damaged)
    block = blocks_of(network)[1]
    cell = _choose(Cell(original_operation(network, block), block, settings), "original", "zero", "identity")
    spliced = tmp_path / f"spliced-{settings.label_weight}.onnx"
    onnx.save(spliced_model(onnx.load(str(damaged)), network, block, cell), str(spliced))
    module = cell_module(load_network(spliced), onnx.load(str(spliced)))
    original = TrainableNetwork(network)
    original.requires_grad_(False)
    samples = RepairSamples(spec, original, train.x, "argmax", settings, keep_labels=train.y)
    finetune(module, samples, settings, Deadline(600), np.random.default_rng(0))
    exported = tmp_path / f"exported-{settings.label_weight}.onnx"
    onnx.save(exported_model(module), str(exported))
    return float(np.mean(run_onnxruntime(load_network(exported), train.x).argmax(axis=1) == train.y))


def test_the_label_term_recovers_the_accuracy_a_damaged_block_lost(trained, tmp_path: Path) -> None:
    """One neuron of the middle block is blown up, so the network misclassifies many training
    digits. Fine-tuning that block's cell to keep the damaged network's outputs keeps the damage;
    with the labels of the keep inputs, the cross-entropy goes to the labels and the exported
    file recovers accuracy, towards that of the undamaged network."""
    torch.set_num_threads(1)
    weights = [(w.copy(), b.copy()) for w, b in trained]
    w, b = weights[1]
    neuron = int(np.argmax(np.abs(weights[2][0]).sum(axis=0)))
    w[neuron] *= 5.0
    b[neuron] = 5.0 * b[neuron] + 0.5
    damaged = tmp_path / "damaged.onnx"
    onnx.save(_mlp(weights), str(damaged))
    undamaged = tmp_path / "undamaged.onnx"
    onnx.save(_mlp(trained), str(undamaged))
    train = datasets.digits("train")

    def accuracy(path: Path) -> float:
        return float(np.mean(run_onnxruntime(load_network(path), train.x).argmax(axis=1) == train.y))

    # a small box around a digit both networks classify right with room: nothing to repair there
    margins = run_onnxruntime(load_network(damaged), train.x)
    right = np.flatnonzero(margins.argmax(axis=1) == train.y)
    k = int(right[np.argmax(np.sort(margins[right], axis=1)[:, -1] - np.sort(margins[right], axis=1)[:, -2])])
    spec = label_spec(64, 10, int(train.y[k]), np.clip(train.x[k] - 0.01, 0, 1), np.clip(train.x[k] + 0.01, 0, 1))
    settings = ArchRepairSettings(box_samples=100, keep_samples=len(train.x), finetune_steps=300, verifiable_weight=0.0,
                                  attack_starts=16, attack_steps=5)
    keeping = _finetuned_accuracy(damaged, spec, dataclasses.replace(settings, label_weight=0.0), train, tmp_path)
    labelled = _finetuned_accuracy(damaged, spec, settings, train, tmp_path)
    before, clean = accuracy(damaged), accuracy(undamaged)
    assert clean - before > 0.05, (before, clean)  # the damage does cost accuracy
    assert keeping < before + 0.02, (before, keeping)  # keeping the damaged network's decisions keeps the damage
    assert labelled > before + 0.5 * (clean - before), (before, labelled, clean)


def test_labels_of_the_keep_inputs_are_checked() -> None:
    spec = label_spec(64, 10, 0, np.zeros(64), np.full(64, 0.01))
    module = TrainableNetwork(load_network(DIGITS))
    settings = ArchRepairSettings(box_samples=10, keep_samples=10)
    x = np.random.default_rng(0).random((20, 64))
    with pytest.raises(InputError, match="--data.*19 labels for 20 inputs"):
        RepairSamples(spec, module, x, "argmax", settings, keep_labels=np.zeros(19))
    with pytest.raises(InputError, match="--data.*label 10 is not an output index"):
        RepairSamples(spec, module, x, "argmax", settings, keep_labels=np.full(20, 10))
    with pytest.raises(InputError, match="--data.*whole numbers"):
        RepairSamples(spec, module, x, "argmax", settings, keep_labels=np.full(20, 0.5))


def test_the_validation_split_comes_from_the_labelled_keep_inputs_and_is_never_trained_on() -> None:
    """The split is drawn from ``--data`` (the only data a strategy is given) before the keep
    samples, so no validation row is a keep sample; without labels there is none."""
    spec = label_spec(64, 10, 0, np.zeros(64), np.full(64, 0.01))
    module = TrainableNetwork(load_network(DIGITS))
    train = datasets.digits("train")
    settings = ArchRepairSettings(box_samples=10, keep_samples=len(train.x), validation_share=0.25)
    for label_weight in (1.0, 0.0):
        samples = RepairSamples(spec, module, train.x, "argmax", dataclasses.replace(settings, label_weight=label_weight),
                                keep_labels=train.y)
        assert samples.validation_x is not None and samples.validation_y is not None
        assert len(samples.validation_x) == round(0.25 * len(train.x))
        assert len(samples.keep_x) + len(samples.validation_x) == len(train.x)
        rows = {tuple(row) for row in train.x.astype(np.float32).tolist()}
        validation = {tuple(row) for row in samples.validation_x.numpy().tolist()}
        assert validation <= rows and not validation & {tuple(row) for row in samples.keep_x.numpy().tolist()}
        labels = {tuple(row): int(y) for row, y in zip(train.x.astype(np.float32).tolist(), train.y)}
        assert [labels[tuple(row)] for row in samples.validation_x.numpy().tolist()] == samples.validation_y.tolist()
    unlabelled = RepairSamples(spec, module, train.x, "argmax", settings)
    assert unlabelled.validation_x is None and unlabelled.validation_accuracy(module) is None
    assert len(unlabelled.keep_x) == len(train.x)


@pytest.mark.parametrize("proven, script, kept_round", [
    (0.90, [(True, 0.92), (True, 0.91), (False, 0.99), (True, 0.93)], 4),
    (0.90, [(True, 0.89), (True, 0.88), (True, 0.90), (True, 0.85)], 3),  # a tie: the later weights
    (0.90, [(False, 0.95), (False, 0.99), (True, 0.80), (False, 0.99)], 0),
])
def test_the_accuracy_phase_keeps_the_most_accurate_weights_that_meet_the_goals(
        monkeypatch, tmp_path: Path, proven: float, script: list[tuple[bool, float]], kept_round: int) -> None:
    """Scripted verdicts per round (goals met?, validation accuracy): the weights left are those
    judged most accurate among the proven ones and those of the rounds that met the goals, as they
    were when judged; the exported file computes what the module does (onnxruntime)."""
    torch.set_num_threads(1)
    network = load_network(DIGITS)
    block = blocks_of(network)[1]
    train = datasets.digits("train")
    settings = ArchRepairSettings(box_samples=50, keep_samples=400, accuracy_steps=5, accuracy_rounds=4,
                                  attack_starts=4, attack_steps=2)
    cell = _choose(Cell(original_operation(network, block), block, settings), "original", "zero", "identity")
    spliced = tmp_path / "spliced.onnx"
    onnx.save(spliced_model(onnx.load(str(DIGITS)), network, block, cell), str(spliced))
    original = TrainableNetwork(network)
    original.requires_grad_(False)
    k = int(np.flatnonzero(run_onnxruntime(network, train.x).argmax(axis=1) == train.y)[0])
    spec = label_spec(64, 10, int(train.y[k]), np.clip(train.x[k] - 0.001, 0, 1), np.clip(train.x[k] + 0.001, 0, 1))
    module = cell_module(load_network(spliced), onnx.load(str(spliced)))
    samples = RepairSamples(spec, original, train.x, "argmax", settings, keep_labels=train.y)
    trainable = [p for p in module.parameters() if p.requires_grad]
    verdicts = iter(script)
    accuracies = iter([proven] + [accuracy for met, accuracy in script if met])
    judged: list[list[torch.Tensor]] = []

    def goals_met(self, floor=None) -> tuple[bool, float]:
        assert floor is not None and len(floor) == len(samples.verified.regions)
        return next(verdicts)[0], 0.0

    def validation_accuracy(model) -> float:
        judged.append([p.detach().clone() for p in trainable])
        return next(accuracies)

    monkeypatch.setattr(finetune_module._Rounds, "goals_met", goals_met)
    monkeypatch.setattr(samples, "validation_accuracy", validation_accuracy)
    details = accuracy_rounds(module, samples, settings, Deadline(600), np.random.default_rng(0))
    assert details["accuracy_round_kept"] == kept_round and details["accuracy_rounds_run"] == len(script), details
    assert details["accuracy_rounds_meeting_goals"] == sum(met for met, _ in script) == len(judged) - 1
    assert details["validation_accuracy"] == ([proven] + [a for _, a in script])[kept_round]
    assert details["validation_accuracy_proven"] == proven
    judged_as = sum(met for met, _ in script[:kept_round])  # the proven weights were judged first
    assert all(torch.equal(p, q) for p, q in zip(trainable, judged[judged_as]))
    if len(judged) > 1:
        assert not all(torch.equal(p, q) for p, q in zip(judged[0], judged[-1]))  # the rounds did train
    exported = tmp_path / "exported.onnx"
    onnx.save(exported_model(module), str(exported))
    with torch.no_grad():
        expected = module(torch.tensor(train.x[:50], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(run_onnxruntime(load_network(exported), train.x[:50]), expected, rtol=1e-4, atol=1e-4)


def test_a_named_block_is_repaired_instead_of_the_highest_scoring_one() -> None:
    network = load_network(DIGITS)
    blocks = blocks_of(network)
    scores = [BlockScore(block, forward, 0.0) for block, forward in zip(blocks, (0.1, 0.9))]
    assert searchable(network, scores)[0] == blocks[1]
    block, warm = searchable(network, scores, blocks[0].target)
    x = torch.rand(5, 64, dtype=torch.float64)
    expected = network.run_nodes(block.nodes(network), {**network.constants_as(torch.float64, torch.device("cpu")),
                                                        block.source: x})[block.target]
    assert block == blocks[0] and torch.allclose(warm.double()(x), expected)
    with pytest.raises(SettingsError, match="block 'nope' is not one of the network's blocks"):
        searchable(network, scores, "nope")


def test_without_a_proof_of_its_own_or_labels_archrepair_offers_no_accuracy_polish(tmp_path: Path) -> None:
    """No session (nothing proven by this strategy) or no validation split (keep inputs without
    labels, or the phase turned off): nothing to polish from or to judge by."""
    torch.set_num_threads(1)
    network = load_network(DIGITS)
    spec = parse_vnnlib(ROBUST, n_inputs=64, n_outputs=10)
    found = verify(network, spec, VerifySettings(timeout=60)).counterexample
    assert found is not None
    problem = RepairProblem(network, spec, (found.x,), keep_inputs=datasets.digits("train").x)
    proven = RepairCandidate(onnx.load(str(DIGITS)))
    assert ArchRepair().polish(problem, proven, Deadline(60)) is None
    settings = ArchRepairSettings(box_samples=50, keep_samples=100, attack_starts=128, attack_steps=20, search_steps=2,
                                  finetune_steps=2, max_seconds=20)
    strategy = ArchRepair(settings)
    candidate = strategy.repair(problem, None, Deadline(60))  # unlabelled keep inputs
    assert strategy.session is not None and strategy.session.samples.validation_x is None
    assert strategy.polish(problem, candidate, Deadline(60)) is None
    off = ArchRepair(dataclasses.replace(settings, accuracy_rounds=0))
    labelled = dataclasses.replace(problem, keep_labels=datasets.digits("train").y)
    candidate = off.repair(labelled, None, Deadline(60))
    assert off.session is not None and off.session.samples.validation_x is not None
    assert off.polish(labelled, candidate, Deadline(60)) is None


def test_label_steps_train_the_cell_without_bounding_the_boxes(monkeypatch, tmp_path: Path) -> None:
    """`finetune`'s ``label_steps`` move the cell's weights (the labels' cross-entropy) without a
    single bound of the boxes; the rounds after them bound the boxes at risk."""
    torch.set_num_threads(1)
    network = load_network(DIGITS)
    block = blocks_of(network)[1]
    train = datasets.digits("train")
    settings = ArchRepairSettings(box_samples=50, keep_samples=400, finetune_steps=3, attack_starts=4, attack_steps=2)
    cell = _choose(Cell(original_operation(network, block), block, settings), "original", "zero", "identity")
    spliced = tmp_path / "spliced.onnx"
    onnx.save(spliced_model(onnx.load(str(DIGITS)), network, block, cell), str(spliced))
    module = cell_module(load_network(spliced), onnx.load(str(spliced)))
    original = TrainableNetwork(network)
    original.requires_grad_(False)
    spec = label_spec(64, 10, int(train.y[0]), np.clip(train.x[0] - 0.001, 0, 1), np.clip(train.x[0] + 0.001, 0, 1))
    samples = RepairSamples(spec, original, train.x, "argmax", settings, keep_labels=train.y)
    before = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    bounded: list[int] = []
    monkeypatch.setattr(finetune_module, "regions_at_risk", lambda *args: bounded.append(1) or [])
    rounds = finetune_module._Rounds(module, samples, settings, Deadline(600), np.random.default_rng(0))
    assert rounds.train(20, verifiable=False)
    assert not bounded
    assert not all(torch.equal(p, q) for p, q in zip(before, (p for p in module.parameters() if p.requires_grad)))
    rounds.train(1)
    assert bounded == [1]


def test_a_widening_below_one_or_a_negative_shift_is_refused() -> None:
    with pytest.raises(SettingsError, match="widen must be at least 1"):
        ArchRepairSettings(widen=0)
    with pytest.raises(SettingsError, match="shift_pixels at least 0"):
        ArchRepairSettings(shift_pixels=-1)
