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
from random_nets import random_box, random_mlp, sample_box

from verirepair.bounds import ActivationLayer, AffineLayer, Chain, lower_network
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair.birdnn.domain import RegionTensors
from verirepair.repair.birdnn.export import chain_onnx
from verirepair.repair.birdnn.imitation import imitation_targets, nearest_indices
from verirepair.repair.birdnn.localise import Neuron, scaled_outputs, with_scaled_neurons
from verirepair.repair.birdnn.mlp import ChainModule, chain_of
from verirepair.repair.birdnn.pso import SwarmSettings, particle_swarm
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


# ---- export ------------------------------------------------------------------------------------------
def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    network = load_network(path)
    return run_onnxruntime(network, x)


def _random_chain(kind: str, sizes: list[int], seed: int) -> Chain:
    generator = torch.Generator().manual_seed(seed)
    layers: list[AffineLayer | ActivationLayer] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(ActivationLayer(kind, a))
        layers.append(AffineLayer(torch.randn(b, a, generator=generator, dtype=torch.float64) / a ** 0.5,
                                  torch.randn(b, generator=generator, dtype=torch.float64) * 0.1))
    return Chain(tuple(layers))


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh"])
def test_export_equals_the_torch_forward_in_onnxruntime(kind: str, tmp_path: Path) -> None:
    like = load_network(TANH)
    chain = _random_chain(kind, [3, 7, 6, 2], seed=7)
    module = ChainModule(chain)
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(chain_onnx(chain_of(module), like).SerializeToString())
    exported = load_network(path)
    assert (exported.input_name, exported.input_shape) == (like.input_name, like.input_shape)
    assert (exported.output_name, exported.output_shape) == (like.output_name, like.output_shape)
    x = np.random.default_rng(8).uniform(-2, 2, size=(64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).double().numpy()
    assert np.allclose(_onnxruntime(path, x), expected, rtol=1e-5, atol=1e-6)


def test_export_keeps_the_acas_input_and_output_declarations(benchmarks: Path, tmp_path: Path) -> None:
    original = load_network(benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_9_batch_2000.onnx")
    path = tmp_path / "acas.onnx"
    path.write_bytes(chain_onnx(lower_network(original), original).SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.name == "input" and declared.shape == [1, 1, 1, 5]
    assert [o.name for o in session.get_outputs()] == [original.output_name]
    x = np.random.default_rng(9).uniform(-0.5, 0.5, size=(32, 5))
    assert np.allclose(_onnxruntime(path, x), run_onnxruntime(original, x), rtol=1e-5, atol=1e-6)


# ---- fault localisation ---------------------------------------------------------------------------------
def test_vectorised_scaling_equals_folding_the_scales_into_the_weights() -> None:
    module = ChainModule(_random_chain("tanh", [3, 8, 8, 8, 2], seed=10), dtype=torch.float64)
    neurons = [Neuron(1, 3, 0.0), Neuron(0, 5, 0.0), Neuron(2, 0, 0.0)]
    ratios = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.3, 0.9], [-1.0, 0.2, 0.0]], dtype=torch.float64)
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        batched = scaled_outputs(module, neurons, ratios, x)
        for p in range(len(ratios)):
            assert torch.allclose(batched[p], with_scaled_neurons(module, neurons, ratios[p])(x), atol=1e-12)
        assert torch.allclose(batched[0], module(x), atol=1e-12)


# ---- domain characterisation ------------------------------------------------------------------------------
def test_negatives_imitate_the_nearest_safe_positive_and_counterexample_clouds_are_capped() -> None:
    from verirepair.repair.birdnn.samples import RepairData
    from verirepair.repair.birdnn.settings import BirdnnSettings

    original = ChainModule(lower_network(load_network(TANH)))
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
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["relu", "tanh", "sigmoid"]))
def test_certified_margin_is_below_the_margin_at_every_sampled_point_and_has_gradients(seed: int, kind: str) -> None:
    from verirepair.repair.birdnn.certified import certified_margins

    chain = random_mlp(seed, 3, [6, 5], 2, activation=kind)
    module = ChainModule(chain, dtype=torch.float64)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)  # margin 0.95 - |y0| on its box
    region = RegionTensors.of(spec.regions[0], torch.float64)
    lower, upper = random_box(seed, 3, batch=4, width=0.5)
    bound = certified_margins(module, region, lower, upper)
    points = sample_box(seed + 1, lower, upper, 300)
    with torch.no_grad():
        sampled = torch.stack([region.margin(module(p)).min() for p in points])
    assert torch.all(bound.detach() <= sampled + 1e-9)
    bound.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in module.parameters())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.3, 3.0))
def test_partition_leaves_tile_the_box_and_positive_leaves_hold_on_dense_samples(seed: int, threshold: float) -> None:
    from verirepair.repair.birdnn.certified import Partition
    from verirepair.spec import Box, Clause, Region

    chain = random_mlp(seed, 2, [8, 8], 2)
    module = ChainModule(chain, dtype=torch.float64)
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


def test_partition_certifies_the_whole_box_when_the_property_holds_with_room() -> None:
    from verirepair.repair.birdnn.certified import Partition
    from verirepair.spec import Box, Clause, Region

    module = ChainModule(random_mlp(3, 2, [8, 8], 2), dtype=torch.float64)
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
