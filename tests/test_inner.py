"""INNER: its localisation finds a planted fault, its candidates keep the original graph, and
check-and-fix with it gives a proven repair of the shipped digits classifier."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnx_factory import build_model, save
from repair_nets import architecture, small_cnn

import verirepair
from verirepair import datasets
from verirepair.bounds import BoundEngine, build_graph
from verirepair.errors import UnsupportedError
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairProblem, registry
from verirepair.repair.birdnn.attack import low_margin_points
from verirepair.repair.birdnn.certified import whole_box_margins
from verirepair.repair.birdnn.common import candidate_of
from verirepair.repair.birdnn.samples import PropertyMargin
from verirepair.repair.inner import InnerSettings, InnerStrategy
from verirepair.repair.inner.inputs import CleanInputs, LabelledInputs
from verirepair.repair.inner.labels import protected_label, protected_labels
from verirepair.repair.inner.layers import repairable_layers
from verirepair.repair.inner.localise import localise
from verirepair.repair.inner.optimise import masked_optimisation
from verirepair.repair.parameters import TrainableNetwork
from verirepair.repair.pointwise import label_spec
from verirepair.spec import parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_classifier.onnx"
ROBUST = ROOT / "specs" / "digits_robust_0_eps0.12.vnnlib"
FAST = InnerSettings(clean_inputs=600, probe_epochs=100)


def _trained_mlp(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """W0, b0, W1, b1, W2, b2 of a 64-24-16-10 ReLU MLP fitted to the digits."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.ReLU(), torch.nn.Linear(24, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    assert (net(x).argmax(dim=1) == y).float().mean() > 0.95
    return [p.detach().clone() for p in net.parameters()]


def _dense_onnx(weights: list[torch.Tensor], path: Path) -> Path:
    nodes, inits, current = [], [], "x"
    for k in range(len(weights) // 2):
        inits += [numpy_helper.from_array(weights[2 * k].numpy(), f"W{k}"), numpy_helper.from_array(weights[2 * k + 1].numpy(), f"b{k}")]
        out = "y" if k == len(weights) // 2 - 1 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [out], transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"]))
            current = f"h{k}"
    return save(build_model(nodes, [("x", [1, 64])], [("y", [1, 10])], inits), path)


def test_localisation_finds_a_planted_fault(tmp_path: Path) -> None:
    """A trained MLP gets one extra first-layer unit reading pixels that are dark in every digit
    (inert: its outgoing weights are 0), then the planted fault: one incoming weight of a
    last-hidden-layer unit, from that extra unit, set large. Clean digits keep their decisions
    exactly; digits with the dark pixels lit fail. The ranking puts the last hidden layer first,
    the corrupted weight heads the fault set and its unit heads the unit ranking."""
    torch.set_num_threads(1)
    train = datasets.digits("train")
    x, y = torch.tensor(train.x, dtype=torch.float32), torch.tensor(train.y).long()
    W0, b0, W1, b1, W2, b2 = _trained_mlp(x, y)
    with torch.no_grad():
        hidden = torch.relu(torch.relu(x @ W0.T + b0) @ W1.T + b1)
    unit = int((hidden[y == 8].mean(dim=0) - hidden[y != 8].mean(dim=0)).argmax())  # the unit most tied to class 8
    dark = torch.nonzero(x.amax(dim=0) == 0).flatten()
    reader = torch.zeros(1, 64)
    reader[0, dark] = 1.0
    W0, b0 = torch.cat([W0, reader]), torch.cat([b0, torch.zeros(1)])
    W1 = torch.cat([W1, torch.zeros(16, 1)], dim=1)
    W1[unit, -1] = 20.0  # the planted fault
    module = TrainableNetwork(load_network(_dense_onnx([W0, b0, W1, b1, W2, b2], tmp_path / "planted.onnx")))
    module.requires_grad_(False)
    with torch.no_grad():
        decisions = module(x).argmax(dim=1)
        lit = x.clone()
        lit[:, dark] = 1.0
        failing = module(lit).argmax(dim=1) != y
    assert bool((decisions == y).all()) and int(failing.sum()) > 100

    found = localise(module, x, decisions, lit[failing], y[failing], 10, FAST, np.random.default_rng(0))
    assert [found.layers[k].activation for k in found.order] == ["h1", "h0"]
    routing = found.routings[found.order[0]]  # the top-ranked layer
    assert routing.unit_ranking()[0] == unit
    top = int(torch.argmax(routing.score))
    planted = (unit, W1.shape[1] - 1)
    assert np.unravel_index(top, tuple(W1.shape)) == planted
    assert bool(found.fault_sets(0.01)["W1"][planted])


def _cnn_problem(tmp_path: Path) -> tuple[RepairProblem, Path]:
    """The test CNN with a box around a point where it says 0 that holds an input it calls 1."""
    path = save(small_cnn(seed=3), tmp_path / "cnn.onnx")
    network = load_network(path)
    rng = np.random.default_rng(0)
    for _ in range(200):
        centre = rng.uniform(-1, 1, 36)
        lower, upper = centre - 0.6, centre + 0.6
        samples = rng.uniform(lower, upper, (400, 36))
        decisions = run_onnxruntime(network, np.vstack([centre, samples])).argmax(axis=1)
        if decisions[0] == 0 and (decisions[1:] == 1).any():
            spec = label_spec(36, 2, 0, lower, upper)
            counterexample = samples[np.flatnonzero(decisions[1:] == 1)[0]]
            return RepairProblem(network, spec, (counterexample,), decision="argmax"), path
    raise AssertionError("no box with a violation found")


def test_the_candidate_keeps_the_graph_and_onnxruntime_agrees_with_the_repaired_module(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    problem, path = _cnn_problem(tmp_path)
    strategy = InnerStrategy(dataclasses.replace(FAST, max_rounds=2, steps_per_round=30))
    candidate = strategy.repair(problem, None, Deadline(60))
    original = onnx.load(path)
    assert architecture(candidate.model) == architecture(original)  # same nodes, names, shapes, types
    assert [node.op_type for node in candidate.model.graph.node].count("Conv") == 2
    changed = [init.name for init, before in zip(candidate.model.graph.initializer, original.graph.initializer)
               if not np.array_equal(numpy_helper.to_array(init), numpy_helper.to_array(before))]
    assert changed and set(changed) <= {layer.weight for layer in strategy.session.localisation.layers}
    written = tmp_path / "candidate.onnx"
    written.write_bytes(candidate.model.SerializeToString())
    x = np.random.default_rng(1).uniform(-1.5, 1.5, (64, 36))
    with torch.no_grad():
        expected = strategy.session.current(torch.tensor(x, dtype=torch.float32)).double().numpy()
    assert np.allclose(run_onnxruntime(load_network(written), x), expected, atol=1e-5)


def test_the_protected_label_is_read_from_the_clauses() -> None:
    spec = parse_vnnlib(ROBUST, n_inputs=64, n_outputs=10)
    assert protected_label(spec.regions[0]) == 1
    assert protected_label(label_spec(3, 4, 2, np.zeros(3), np.ones(3)).regions[0]) == 2


def test_a_property_that_protects_no_label_is_refused_in_one_line() -> None:
    spec = parse_vnnlib(ROOT / "specs" / "tanh_controller_steering_limit.vnnlib", n_inputs=3, n_outputs=2)
    with pytest.raises(UnsupportedError, match="classifier properties"):
        protected_labels(spec)


def test_inner_is_registered() -> None:
    assert registry.strategy_named("inner").name == "inner"


def test_check_and_fix_with_inner_proves_the_digits_robustness_property(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train = datasets.digits("train")
    spec = parse_vnnlib(ROBUST, n_inputs=64, n_outputs=10)
    assert verify(load_network(DIGITS), spec, VerifySettings(timeout=60)).status == "sat"  # violated before
    output = tmp_path / "repaired.onnx"
    report = verirepair.check_and_fix(DIGITS, ROBUST, strategy="inner", output=output, budget=240, verify_timeout=60,
                                      side_effect_samples=500, data=(train.x, train.y), decision="argmax")
    assert report.status == "repaired", [(i.verdict, i.details) for i in report.iterations]
    repaired = load_network(output)  # re-verified from the written file
    assert verify(repaired, spec, VerifySettings(timeout=60)).status == "unsat"
    assert repaired.op_types == load_network(DIGITS).op_types


def test_clean_batches_draw_the_asked_share_from_the_data_rows() -> None:
    clean = CleanInputs(torch.zeros(40, 3), torch.zeros(40, 2), outside=10)
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = clean.batch(8, 0.75, rng).numpy()
        assert len(set(batch.tolist())) == 8
        assert int((batch < 10).sum()) == 6 and int((batch >= 10).sum()) == 2
    only_data = CleanInputs(torch.zeros(5, 3), torch.zeros(5, 2), outside=5)
    assert sorted(only_data.batch(8, 0.75, rng).tolist()) == [0, 1, 2, 3, 4]  # one part: all of it


def _digits_problem() -> RepairProblem:
    """The shipped digits classifier, its violated eps0.12 property and the verifier's
    counterexample."""
    network = load_network(DIGITS)
    spec = parse_vnnlib(ROBUST, n_inputs=64, n_outputs=10)
    verdict = verify(network, spec, VerifySettings(timeout=60))
    assert verdict.status == "sat" and verdict.counterexample is not None
    return RepairProblem(network, spec, (verdict.counterexample.x,), keep_inputs=datasets.digits("train").x,
                         decision="argmax")


def _written(candidate: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(candidate.SerializeToString())
    return path


def _label_margins(outputs: np.ndarray, label: int) -> np.ndarray:
    return outputs[:, label] - np.delete(outputs, label, axis=1).max(axis=1)


def test_recovery_holds_the_failing_margins_and_moves_only_the_fault_set(tmp_path: Path) -> None:
    """After repair steps and margin-preserving recovery, in onnxruntime on the written file,
    every failing input keeps at least the search's margin, and no weight outside the fault set
    differs from the original file's."""
    torch.set_num_threads(1)
    problem = _digits_problem()
    settings = dataclasses.replace(FAST, steps_per_round=60, recovery_steps=100, recovery_rounds=2)
    strategy = InnerStrategy(settings)
    candidate = strategy.repair(problem, None, Deadline(120))
    assert candidate.details["samples_satisfied"] and candidate.details["recovery_rounds_kept"] > 0
    written = load_network(_written(candidate.model, tmp_path / "recovered.onnx"))
    failing = strategy.session.failing
    margins = _label_margins(run_onnxruntime(written, failing.x.double().numpy()), 1)
    assert set(failing.labels.tolist()) == {1} and margins.min() >= settings.attack_margin - 1e-4
    faults = strategy.session.localisation.fault_sets(settings.fault_share)
    before = {init.name: numpy_helper.to_array(init) for init in onnx.load(DIGITS).graph.initializer}
    for init in candidate.model.graph.initializer:
        after = numpy_helper.to_array(init)
        outside = ~faults[init.name].numpy() if init.name in faults else np.ones(after.shape, dtype=bool)
        assert np.array_equal(after[outside], before[init.name][outside])


def test_the_verifiability_term_lifts_the_whole_box_bound_of_the_written_file(tmp_path: Path) -> None:
    """Repair steps with only the verifiability term (no failing input) raise the CROWN bound of
    the property margin over the box, as the verifier's own bound engine computes it on the
    exported file; that bound is sound for the margins onnxruntime gives at samples of the box."""
    torch.set_num_threads(1)
    problem = _digits_problem()
    spec = problem.spec
    box = spec.regions[0].box

    assert all(clause.A.shape[0] == 1 for clause in spec.regions[0].clauses)  # clause k: y_label - y_k <= 0
    rows = torch.tensor(np.vstack([c.A for c in spec.regions[0].clauses]), dtype=torch.float64)
    offsets = torch.tensor(np.concatenate([c.b for c in spec.regions[0].clauses]), dtype=torch.float64)

    def bound_of(path: Path) -> float:
        """The region's margin is min over clauses of (A·y - b): its bound is the smallest row bound."""
        engine = BoundEngine(build_graph(load_network(path)))
        lower = engine.output_bounds(torch.tensor(box.lower).unsqueeze(0), torch.tensor(box.upper).unsqueeze(0),
                                     rows, -offsets).lower
        return float(lower.min())

    module = TrainableNetwork(problem.original)
    module.requires_grad_(False)
    faults = {layer.weight: torch.ones_like(module.parameter(layer.weight), dtype=torch.bool)
              for layer in repairable_layers(module)}
    kept = {name: module.parameter(name).detach().clone() for name in faults}
    inputs = torch.tensor(datasets.digits("train").x[:200], dtype=module.dtype)
    with torch.no_grad():
        clean = CleanInputs(inputs, module(inputs), len(inputs))
    regions = PropertyMargin(spec).regions
    start = float(whole_box_margins(module, regions).min())
    settings = dataclasses.replace(FAST, steps_per_round=40, verifiable_weight=5.0, verifiable_target=start + 1.0)
    empty = LabelledInputs(torch.zeros((0, 64)), torch.zeros(0, dtype=torch.long))
    masked_optimisation(module, faults, kept, empty, clean, settings, Deadline(60), np.random.default_rng(0), regions)
    after_path = _written(candidate_of(module, problem, {}, {}).model, tmp_path / "lifted.onnx")
    assert bound_of(DIGITS) == pytest.approx(start, rel=1e-3, abs=1e-3)
    assert bound_of(after_path) > bound_of(DIGITS) + 0.1
    samples = np.random.default_rng(1).uniform(box.lower, box.upper, (500, 64))
    assert _label_margins(run_onnxruntime(load_network(after_path), samples), 1).min() >= bound_of(after_path) - 1e-4


def test_an_undecided_candidate_turns_the_verifiability_term_on() -> None:
    torch.set_num_threads(1)
    problem = _digits_problem()
    strategy = InnerStrategy(dataclasses.replace(FAST, steps_per_round=20, max_rounds=1, recovery_rounds=0))
    first = strategy.repair(problem, None, Deadline(60))
    assert first.details["verifiable_term"] is False
    again = strategy.repair(problem, first, Deadline(60))  # same counterexamples: the verifier did not decide
    assert again.details["verifiable_term"] is True
    fresh = InnerStrategy(dataclasses.replace(FAST, steps_per_round=20, max_rounds=1, recovery_rounds=0, verifiable_weight=0))
    fresh.repair(problem, fresh.repair(problem, None, Deadline(60)), Deadline(60))
    assert fresh.session.verifiable is False


def test_pgd_keeps_points_on_the_faces_of_a_box_that_float32_cannot_hold(tmp_path: Path) -> None:
    """MNIST boxes have faces (e.g. 0.05 - ...) that round outside the box in float32. PGD from the
    verifier's counterexample of the original MLP ends on such faces; the points it returns lie in
    the box in float64 and violate the property in onnxruntime."""
    torch.set_num_threads(1)
    network = load_network(ROOT / "models" / "mnist_mlp.onnx")
    spec = parse_vnnlib(ROOT / "specs" / "mnist_mlp_robust" / "mnist_mlp_robust_100.vnnlib.gz", n_inputs=784,
                        n_outputs=10)
    box = spec.regions[0].box
    assert (box.upper.astype(np.float32).astype(np.float64) > box.upper).any()
    verdict = verify(network, spec, VerifySettings(timeout=60))
    assert verdict.status == "sat" and verdict.counterexample is not None
    module = TrainableNetwork(network)
    module.requires_grad_(False)
    seed = torch.tensor(verdict.counterexample.x, dtype=module.dtype).reshape(1, -1)
    found = low_margin_points(module, PropertyMargin(spec), seed, 8, 10, 0.0, np.random.default_rng(0))
    assert len(found)
    assert ((found >= box.lower) & (found <= box.upper)).all()
    outputs = run_onnxruntime(network, found)
    label = protected_label(spec.regions[0])
    assert (_label_margins(outputs, label) <= 0).all()
