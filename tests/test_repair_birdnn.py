"""BIRDNN repair: its building blocks against independent oracles, and end-to-end repairs whose
result the complete verifier proves on the exported file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_factory import save
from repair_nets import architecture, dense_chain, small_cnn

from verirepair.network import load_network, read_onnx_model, run_onnxruntime
from verirepair.repair.birdnn.domain import RegionTensors
from verirepair.repair.birdnn.imitation import imitation_targets, nearest_indices
from verirepair.repair.birdnn.localise import (
    Neuron,
    scaled_outputs,
    with_scaled_neurons,
)
from verirepair.repair.birdnn.pso import SwarmSettings, particle_swarm
from verirepair.repair.parameters import TrainableNetwork, exported_model
from verirepair.spec import parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
TANH = ROOT / "models" / "tanh_controller.onnx"
STEERING_LIMIT = ROOT / "specs" / "tanh_controller_steering_limit.vnnlib"


# ---- particle swarm -------------------------------------------------------------------------------
def test_pso_finds_the_minimum_of_a_shifted_sphere() -> None:
    centre = np.array([0.3, -0.7, 0.55, 0.1])
    result = particle_swarm(lambda p: ((p - centre) ** 2).sum(axis=1), np.full(4, -1.0), np.full(4, 1.0),
                            SwarmSettings(particles=30, iterations=300, patience=300, seed=1))
    assert np.allclose(result.best, centre, atol=1e-3)
    assert result.value < 1e-6


def test_pso_finds_the_rosenbrock_valley_minimum() -> None:
    def rosenbrock(p: np.ndarray) -> np.ndarray:
        return (1 - p[:, 0]) ** 2 + 100 * (p[:, 1] - p[:, 0] ** 2) ** 2

    result = particle_swarm(rosenbrock, np.full(2, -2.0), np.full(2, 2.0),
                            SwarmSettings(particles=40, iterations=400, patience=400, seed=2))
    assert np.allclose(result.best, [1.0, 1.0], atol=2e-2)


def test_pso_keeps_particles_inside_the_bounds() -> None:
    seen: list[np.ndarray] = []

    def objective(p: np.ndarray) -> np.ndarray:
        seen.append(p.copy())
        return -p.sum(axis=1)  # minimum at the upper corner, pushes particles out

    result = particle_swarm(objective, np.zeros(3), np.ones(3), SwarmSettings(iterations=50, seed=3))
    positions = np.vstack(seen)
    assert positions.min() >= 0.0 and positions.max() <= 1.0
    assert np.allclose(result.best, 1.0, atol=1e-3)


# ---- imitation targets --------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_imitation_targets_match_brute_force_nearest_positives(k: int) -> None:
    rng = np.random.default_rng(5)
    negatives, positives = rng.standard_normal((37, 5)), rng.standard_normal((211, 5))
    expected_index = np.array([np.argsort([np.linalg.norm(n - p) for p in positives])[:k] for n in negatives])
    index = nearest_indices(torch.from_numpy(negatives), torch.from_numpy(positives), k).numpy()
    assert np.array_equal(np.sort(index, axis=1), np.sort(expected_index, axis=1))
    targets = imitation_targets(torch.from_numpy(negatives), torch.from_numpy(positives), k).numpy()
    assert np.allclose(targets, positives[expected_index].mean(axis=1))


# ---- property margins ----------------------------------------------------------------------------------
def test_clause_margins_agree_with_the_spec() -> None:
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    region = spec.regions[0]
    tensors = RegionTensors.of(region, torch.float64)
    y = np.random.default_rng(6).uniform(-1.2, 1.2, size=(2000, 2))
    margins = tensors.margin(torch.from_numpy(y)).numpy()
    violated = np.array([any(c.violated_by(row) for c in region.clauses) for row in y])
    assert np.array_equal(margins <= 0, violated)
    assert np.allclose(margins, 0.95 - np.abs(y[:, 0]))


# ---- trainable graph and export ------------------------------------------------------------------------
def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    network = load_network(path)
    return run_onnxruntime(network, x)


def _trainable(model, tmp_path: Path, name: str, dtype: torch.dtype = torch.float32) -> TrainableNetwork:
    return TrainableNetwork(load_network(save(model, tmp_path / f"{name}.onnx")), dtype)


def _perturbed(module: TrainableNetwork, seed: int) -> TrainableNetwork:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def _random_chain_network(tmp_path: Path, kind: str, sizes: list[int], seed: int) -> TrainableNetwork:
    return _trainable(dense_chain(sizes, kind, seed), tmp_path, f"{kind}{seed}", torch.float64)


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh", "cnn"])
def test_export_writes_the_trained_weights_into_the_original_graph(kind: str, tmp_path: Path) -> None:
    model = small_cnn(3) if kind == "cnn" else dense_chain([3, 7, 6, 2], kind, seed=7)
    module = _perturbed(_trainable(model, tmp_path, kind), seed=8)
    assert set(module.names) == {i.name for i in model.graph.initializer}
    path = tmp_path / f"{kind}_repaired.onnx"
    path.write_bytes(exported_model(module).SerializeToString())
    assert architecture(read_onnx_model(path)) == architecture(model)
    n = module.network.n_inputs
    x = np.random.default_rng(8).uniform(-2, 2, size=(64, n)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).double().numpy()
        unchanged = TrainableNetwork(module.network)(torch.from_numpy(x)).double().numpy()
    assert not np.allclose(expected, unchanged, atol=1e-3)  # the export is not the original
    assert np.allclose(_onnxruntime(path, x), expected, rtol=1e-5, atol=1e-5)


def test_export_keeps_the_acas_graph_and_declarations(benchmarks: Path, tmp_path: Path) -> None:
    path = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_9_batch_2000.onnx"
    module = _perturbed(TrainableNetwork(load_network(path)), seed=9)
    out = tmp_path / "acas.onnx"
    out.write_bytes(exported_model(module).SerializeToString())
    assert architecture(read_onnx_model(out)) == architecture(read_onnx_model(path))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.name == "input" and declared.shape == [1, 1, 1, 5]
    x = np.random.default_rng(9).uniform(-0.5, 0.5, size=(32, 5))
    with torch.no_grad():
        expected = module(torch.from_numpy(x).float()).double().numpy()
    assert np.allclose(_onnxruntime(out, x), expected, rtol=1e-5, atol=1e-5)


def test_initializers_also_feeding_folded_nodes_are_not_trained(tmp_path: Path) -> None:
    """``W`` feeds the MatMul and, through a constant Transpose folded at import, the other
    branch: training it would leave the folded transpose stale."""
    from onnx import helper, numpy_helper
    from onnx_factory import build_model

    rng = np.random.default_rng(10)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("MatMul", ["x", "Wt"], ["c"]),
             helper.make_node("Add", ["a", "c"], ["s"]),
             helper.make_node("Add", ["s", "b"], ["y"])]
    module = _trainable(build_model(nodes, [("x", [1, 3])], [("y", [1, 3])], inits), tmp_path, "folded")
    assert module.names == ("b",)


# ---- fault localisation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("points_per_pass", [1, 100, 65536])  # a particle per pass, two per pass, all at once
def test_vectorised_scaling_equals_folding_the_scales_into_the_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, points_per_pass: int) -> None:
    from verirepair.repair.birdnn import localise

    monkeypatch.setattr(localise, "POINTS_PER_PASS", points_per_pass)
    module = _random_chain_network(tmp_path, "tanh", [3, 8, 8, 8, 2], seed=10)
    assert [layer.size for layer in module.hidden_layers] == [8, 8, 8]
    neurons = [Neuron(1, 3, 0.0), Neuron(0, 5, 0.0), Neuron(2, 0, 0.0)]
    ratios = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.3, 0.9], [-1.0, 0.2, 0.0]], dtype=torch.float64)
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        batched = scaled_outputs(module, neurons, ratios, x)
        assert batched.shape == (len(ratios), len(x), 2)
        for p in range(len(ratios)):
            assert torch.allclose(batched[p], with_scaled_neurons(module, neurons, ratios[p])(x), atol=1e-12)
        assert torch.allclose(batched[0], module(x), atol=1e-12)


def test_only_dense_hidden_layers_of_a_cnn_are_scaled(tmp_path: Path) -> None:
    module = _trainable(small_cnn(3), tmp_path, "cnn", torch.float64)
    assert [(layer.value, layer.size, layer.weight, layer.axis) for layer in module.hidden_layers] == [("r3", 8, "fc2.weight", 1)]
    x = torch.rand(20, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    ratios = torch.tensor([[0.4, -0.5]], dtype=torch.float64)
    neurons = [Neuron(0, 2, 0.0), Neuron(0, 7, 0.0)]
    with torch.no_grad():
        values = module.values(x)
        expected = values["r3"].clone()
        expected[:, 2] *= 1.4
        expected[:, 7] *= 0.5
        direct = expected @ module.parameter("fc2.weight").T + module.parameter("fc2.bias")
        assert torch.allclose(scaled_outputs(module, neurons, ratios, x)[0], direct, atol=1e-12)
        assert torch.allclose(with_scaled_neurons(module, neurons, ratios[0])(x), direct, atol=1e-12)


# ---- domain characterisation ------------------------------------------------------------------------------
def test_negatives_imitate_the_nearest_safe_positive_and_counterexample_clouds_are_capped() -> None:
    from verirepair.repair.birdnn.samples import RepairData
    from verirepair.repair.birdnn.settings import BirdnnSettings

    original = TrainableNetwork(load_network(TANH))
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    settings = BirdnnSettings(domain_samples=600, validation_samples=100, outside_samples=100, max_added_points=300)
    data = RepairData(spec, original, settings)
    y0, margin0 = data.domain.y0.double().numpy(), data.domain.margin0.double().numpy()
    assert np.array_equal(margin0 <= 0, np.abs(y0[:, 0]) >= 0.95)  # negatives: |steering| >= 0.95
    pool = y0[margin0 >= data.target_margin]
    for target, own, negative in zip(data.targets.numpy(), y0, margin0 <= 0):
        expected = pool[np.argmin(np.linalg.norm(pool - own, axis=1))] if negative else own
        assert np.allclose(target, expected, atol=1e-6)
    added = data.add_points(np.random.default_rng(12).uniform(-1, 1, size=(100, 3)), with_neighbours=True)
    assert added == 300  # 100 points and 2 neighbours each: the cap shares the cloud out
    assert data.add_points(np.zeros((1, 3)) + 0.5, with_neighbours=False) == 1
    assert data.add_points(np.zeros((1, 3)) + 0.5, with_neighbours=False) == 0  # seen before


# ---- certified margin -----------------------------------------------------------------------------------
def _boxes(seed: int, n: int, batch: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    centre, radius = rng.normal(size=(batch, n)), rng.uniform(0.01, width, size=(batch, n))
    return torch.tensor(centre - radius), torch.tensor(centre + radius)


def _points_of(seed: int, lower: torch.Tensor, upper: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count, n]: uniform points of each box, a third of them moved onto faces."""
    rng = np.random.default_rng(seed)
    u = rng.random((lower.shape[0], count, lower.shape[1]))
    u = np.where(rng.random(u.shape) < 0.3, u.round(), u)
    return lower.unsqueeze(1) + torch.tensor(u) * (upper - lower).unsqueeze(1)


def _check_certified_margin(module: TrainableNetwork, region: RegionTensors, lower: torch.Tensor, upper: torch.Tensor,
                            seed: int) -> None:
    from verirepair.repair.birdnn.certified import certified_margins

    bound = certified_margins(module, region, lower, upper)
    with torch.no_grad():
        sampled = torch.stack([region.margin(module(p)).min() for p in _points_of(seed, lower, upper, 300)])
    assert torch.all(bound.detach() <= sampled + 1e-9)
    bound.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert all(float(module.parameter(name).grad.abs().sum()) > 0 for name in module.names if "weight" in name or "W" in name)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["relu", "tanh", "sigmoid"]))
def test_certified_margin_is_below_the_margin_at_every_sampled_point_and_has_gradients(seed: int, kind: str,
                                                                                      tmp_path_factory) -> None:
    module = _random_chain_network(tmp_path_factory.mktemp("nets"), kind, [3, 6, 5, 2], seed)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)  # margin 0.95 - |y0| on its box
    region = RegionTensors.of(spec.regions[0], torch.float64)
    lower, upper = _boxes(seed, 3, batch=4, width=0.5)
    _check_certified_margin(module, region, lower, upper, seed + 1)


def test_certified_margin_of_a_cnn_is_sound_and_reaches_the_convolutions(tmp_path: Path) -> None:
    from verirepair.spec import Box, Clause, Region

    module = _trainable(small_cnn(4), tmp_path, "cnn", torch.float64)
    box = Box(np.zeros(36), np.ones(36))
    region = RegionTensors.of(Region(box, (Clause(np.array([[-1.0, 1.0]]), np.array([0.0])),)), torch.float64)
    lower = torch.rand(3, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(13)) * 0.9
    _check_certified_margin(module, region, lower, lower + 0.05, seed=14)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.3, 3.0))
def test_partition_leaves_tile_the_box_and_positive_leaves_hold_on_dense_samples(seed: int, threshold: float,
                                                                                tmp_path_factory) -> None:
    from verirepair.repair.birdnn.certified import Partition
    from verirepair.spec import Box, Clause, Region

    module = _random_chain_network(tmp_path_factory.mktemp("nets"), "relu", [2, 8, 8, 2], seed)
    box = Box(np.array([-1.0, -0.5]), np.array([1.0, 1.5]))
    # violated where y0 >= threshold (one clause, one row): margin = threshold - y0
    region = Region(box, (Clause(np.array([[-1.0, 0.0]]), np.array([-threshold])),))
    tensors = RegionTensors.of(region, torch.float64)
    partition = Partition([tensors], min_fraction=1 / 256, max_boxes=400, dtype=torch.float64)
    partition.refine(module, target=0.0, passes=12)
    lower, upper = partition.lower[0].numpy(), partition.upper[0].numpy()
    assert np.isclose(np.prod(upper - lower, axis=1).sum(), np.prod(box.upper - box.lower))
    points = np.random.default_rng(seed).uniform(box.lower, box.upper, (4000, 2))
    inside = np.all((points[:, None, :] >= lower) & (points[:, None, :] <= upper), axis=2)
    assert np.all(inside.sum(axis=1) >= 1)  # a cover; halves share only their cut faces
    with torch.no_grad():
        margins = tensors.margin(module(torch.from_numpy(points))).numpy()
    positive = (partition.bound[0] > 0).numpy()
    assert np.all(margins[inside[:, positive].any(axis=1)] > 0)


def test_partition_certifies_the_whole_box_when_the_property_holds_with_room(tmp_path: Path) -> None:
    from verirepair.repair.birdnn.certified import Partition
    from verirepair.spec import Box, Clause, Region

    module = _random_chain_network(tmp_path, "relu", [2, 8, 8, 2], seed=3)
    box = Box(np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    grid = torch.from_numpy(np.stack(np.meshgrid(*[np.linspace(-1, 1, 201)] * 2), -1).reshape(-1, 2))
    with torch.no_grad():
        highest = float(module(grid)[:, 0].max())
    region = Region(box, (Clause(np.array([[-1.0, 0.0]]), np.array([-(highest + 0.05)])),))
    partition = Partition([RegionTensors.of(region, torch.float64)], min_fraction=1 / 1024, max_boxes=20_000, dtype=torch.float64)
    partition.refine(module, target=0.0, passes=40)
    assert partition.open == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["argmax", "argmin"]), st.floats(0.0, 1.0))
def test_decision_shortfall_matches_a_per_sample_gap_computation(seed: int, rule: str, keep: float) -> None:
    from verirepair.repair.birdnn.retrain import decision_shortfall

    generator = torch.Generator().manual_seed(seed)
    y0 = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = y0 + 0.5 * torch.randn(40, 5, generator=generator, dtype=torch.float64)
    got = decision_shortfall(y, y0, rule, keep).numpy()
    pick = np.argmax if rule == "argmax" else np.argmin
    sign = 1.0 if rule == "argmax" else -1.0
    for row, (now, before) in enumerate(zip(y.numpy(), y0.numpy())):
        decision = int(pick(before))
        rest = [j for j in range(5) if j != decision]
        gap0 = sign * before[decision] - max(sign * before[j] for j in rest)
        gap = sign * now[decision] - max(sign * now[j] for j in rest)
        assert gap0 >= 0
        assert got[row] == pytest.approx(max(0.0, keep * gap0 - gap), abs=1e-12)
        if got[row] == 0 and keep > 0 and gap0 > 0:  # no shortfall: the decision is kept
            assert int(pick(now)) == decision


def test_an_empty_batch_gives_empty_values_of_every_shape(tmp_path: Path) -> None:
    module = _trainable(small_cnn(3), tmp_path, "cnn")
    values = module.values(torch.zeros(0, 36))
    assert values["f"].shape == (0, 18) and module(torch.zeros(0, 36)).shape == (0, 2)
    assert [h.shape for h in module.forward_with_hidden(torch.zeros(0, 36))[1]] == [(0, 8)]


def test_box_draws_fit_their_memory_budget_and_keep_the_originals_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten 784-input robustness regions at 2 MB: both draws shrink in proportion, every region
    keeps draws inside its box, and the original's outputs (evaluated in chunks) are onnxruntime's."""
    from verirepair.repair.birdnn import samples
    from verirepair.repair.birdnn.settings import BirdnnSettings
    from verirepair.spec.model import disjunction_of

    suite = ROOT / "specs" / "mnist_mlp_robust"
    files = sorted(suite.glob("*.vnnlib.gz"))[:10]
    specs = [parse_vnnlib(path, n_inputs=784, n_outputs=10) for path in files]
    spec = disjunction_of(specs, "ten properties")
    network = ROOT / "models" / "mnist_mlp.onnx"
    original = TrainableNetwork(load_network(network))
    monkeypatch.setattr(samples, "EVALUATION_CHUNK", 7)
    budget = BirdnnSettings(domain_samples=400, validation_samples=100, outside_samples=10, sample_memory_mb=2.0)
    data = samples.RepairData(spec, original, budget)
    assert (len(data.domain) + len(data.validation)) * 784 * 8 <= 2 * 2**20
    assert len(data.domain) == 10 * int(400 * 2 * 2**20 / (500 * 10 * 784 * 8))  # the share of the ask that fits
    assert torch.all(data.domain.member.sum(dim=0) >= len(data.domain) // 10)  # every region keeps its draws
    expected = _onnxruntime(network, data.domain.x.double().numpy())
    assert np.allclose(data.domain.y0.double().numpy(), expected, atol=1e-5)
    roomy = samples.RepairData(spec, original, BirdnnSettings(domain_samples=40, validation_samples=10,
                                                              outside_samples=10))
    assert (len(roomy.domain), len(roomy.validation)) == (400, 100)  # within the default budget: as asked
