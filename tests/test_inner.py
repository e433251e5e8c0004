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
from verirepair.errors import UnsupportedError
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairProblem, registry
from verirepair.repair.inner import InnerSettings, InnerStrategy
from verirepair.repair.inner.labels import protected_label, protected_labels
from verirepair.repair.inner.localise import localise
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
    (routing,) = found.routings.values()
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
