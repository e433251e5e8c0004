"""REASSURE building blocks: regions, patch LP, support/patch networks, ONNX export, .nnet reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F  # noqa: E402

from verirepair.network import load_network, read_onnx_model, run_onnxruntime  # noqa: E402
from verirepair.network.nnet import nnet_to_onnx, read_nnet  # noqa: E402
from verirepair.repair.reassure.beside import patched_model  # noqa: E402
from verirepair.repair.reassure.enumerate import enumerate_regions, region_violation  # noqa: E402
from verirepair.repair.reassure.export import mlp_to_onnx  # noqa: E402
from verirepair.repair.reassure.patch import RegionPatch, patch_mlp, patched_reference  # noqa: E402
from verirepair.repair.reassure.patch_lp import minimal_patch, patch_margin_on_region  # noqa: E402
from verirepair.repair.reassure.regions import (  # noqa: E402
    ReluNetwork,
    chebyshev_centre,
    linear_region_of,
    pattern_key,
    relu_network_of,
)
from verirepair.repair.reassure.support import support_value  # noqa: E402
from verirepair.verify import Deadline  # noqa: E402

LABEL = 2
LOWER, UPPER = -np.ones(2), np.ones(2)


def _label_clauses(m: int, label: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Violation clauses "y_label <= y_j" for j != label."""
    out = []
    for j in range(m):
        if j != label:
            row = np.zeros((1, m))
            row[0, label], row[0, j] = 1.0, -1.0
            out.append((row, np.zeros(1)))
    return out


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> tuple[ReluNetwork, object, Path]:
    path = F.save(F.mlp(2, 8, 3, seed=5), tmp_path_factory.mktemp("nets") / "mlp.onnx")
    network = load_network(path)
    return relu_network_of(network), network, path


def _buggy_region(mlp: ReluNetwork, prune=True):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4000, 2))
    bad = x[mlp.forward(x).argmax(1) != LABEL]
    assert len(bad), "the test network must have buggy points"
    return linear_region_of(mlp, bad[0], LOWER, UPPER, prune=prune), bad[0]


def test_region_is_exactly_the_set_with_the_same_activation_pattern(net):
    mlp = net[0]
    x = np.random.default_rng(1).uniform(-1, 1, (20000, 2))
    keys = np.array([pattern_key(p) for p in mlp.patterns(x)])
    for pruned in (False, True):
        region = linear_region_of(mlp, x[0], LOWER, UPPER, prune=pruned)
        same = keys == keys[0]
        assert same.sum() > 1
        np.testing.assert_array_equal(region.contains(x), same)
        # The local affine map is the network on the region.
        np.testing.assert_allclose(x[same] @ region.W.T + region.c, mlp.forward(x[same]), atol=1e-10)


def test_minimal_patch_repairs_the_whole_region_and_is_harmless_elsewhere(net):
    mlp = net[0]
    region, point = _buggy_region(mlp)
    clauses = _label_clauses(3, LABEL)
    cone = np.vstack([A for A, _ in clauses])
    margin = 1e-3
    patch = minimal_patch(region, clauses, cone, (LOWER, UPPER), margin)
    rows = [(clauses[k][0][r], clauses[k][1][r]) for k, r in enumerate(patch.rows)]
    assert patch_margin_on_region(region, patch, rows) >= margin * (1 - 1e-6)
    # Dense sampling inside the region: the label wins with the margin.
    x = np.random.default_rng(2).uniform(-1, 1, (200000, 2))
    inside = x[region.contains(x)]
    assert len(inside) > 10
    y = mlp.forward(inside) + patch(inside)
    others = np.delete(y, LABEL, axis=1)
    assert np.all(y[:, LABEL] - others.max(axis=1) >= margin * (1 - 1e-6))
    # The sup norm over the region is what the LP reports.
    assert np.abs(patch(inside)).max() <= patch.norm + 1e-9
    # Cone: on the whole domain, the patch never lowers the label against another output.
    p = patch(x)
    assert np.all(p[:, [LABEL]] - np.delete(p, LABEL, axis=1) >= -1e-9)


def test_patch_network_is_p_on_the_region_and_zero_away_from_it(net):
    mlp = net[0]
    region, _ = _buggy_region(mlp)
    clauses = _label_clauses(3, LABEL)
    patch = minimal_patch(region, clauses, np.vstack([A for A, _ in clauses]), (LOWER, UPPER), 1e-3)
    K = patch.bound_on_box(LOWER, UPPER) * 1.01 + 1e-6
    gamma = 50.0
    h = RegionPatch(region.A, region.b, gamma, patch.C, patch.d, K, region.key, patch.norm)
    x = np.random.default_rng(3).uniform(-1, 1, (50000, 2))
    inside = region.contains(x)
    np.testing.assert_allclose(h.value(x[inside]), patch(x[inside]), atol=1e-9)
    far = np.all(x @ region.A.T <= region.b + 1.0 / gamma, axis=1) == False  # noqa: E712
    assert far.sum() > 100
    assert np.all(h.value(x[far]) == 0.0)
    g = support_value(region.A, region.b, gamma, x)
    assert np.all((g >= 0) & (g <= 1 + 1e-12))  # (s + 1) - s rounds to 1 ± ulp
    np.testing.assert_allclose(g[inside], 1.0, atol=1e-12)


@pytest.mark.parametrize("forms", [("affine",), ("constant",), ("affine", "constant")])
def test_patched_chain_torch_and_onnxruntime_agree(net, tmp_path, forms):
    mlp, network, _ = net
    clauses = _label_clauses(3, LABEL)
    cone = np.vstack([A for A, _ in clauses])
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (4000, 2))
    bad = x[mlp.forward(x).argmax(1) != LABEL]
    patches, seen = [], set()
    for point in bad:
        region = linear_region_of(mlp, point, LOWER, UPPER)
        if region.key in seen:
            continue
        seen.add(region.key)
        form = forms[len(patches) % len(forms)]
        patch = minimal_patch(region, clauses, cone, (LOWER, UPPER), 1e-3, affine=form == "affine")
        K = patch.bound_on_box(LOWER, UPPER) * 1.01 + 1e-6
        patches.append(RegionPatch(region.A, region.b, 1.0 / max(1e-3, chebyshev_centre(region)[1] * 0.05),
                                   patch.C, patch.d, K, region.key, patch.norm))
        if len(patches) == 4:
            break
    chain = patch_mlp(patches, 2, 3)
    probe = np.vstack([rng.uniform(-1, 1, (300, 2)), bad[:50]])
    reference = patched_reference(mlp, patches, probe)
    np.testing.assert_allclose(mlp.forward(probe) + chain.forward(probe), reference, atol=1e-9)
    path = tmp_path / "patched.onnx"
    original = read_onnx_model(net[2])
    onnx.save(patched_model(original, mlp_to_onnx(chain, network), network), path)
    written = read_onnx_model(path)
    # The original graph is kept, its output renamed; the patch network is added beside it.
    assert [n.op_type for n in written.graph.node][:len(original.graph.node)] == [n.op_type for n in original.graph.node]
    assert {i.name for i in original.graph.initializer} <= {i.name for i in written.graph.initializer}
    assert written.graph.node[-1].op_type == "Add" and written.graph.node[-1].output[0] == network.output_name
    loaded = load_network(path)
    ours = loaded.forward(torch.from_numpy(probe)).numpy()
    ort = run_onnxruntime(loaded, probe)
    np.testing.assert_allclose(ort, reference, atol=1e-4, rtol=1e-5)  # float32 input/output
    np.testing.assert_allclose(ours, ort, atol=1e-4, rtol=1e-5)
    # Every buggy sample of a patched region now takes the label.
    fixed = np.isin([pattern_key(p) for p in mlp.patterns(bad)], list(seen))
    assert np.all(run_onnxruntime(loaded, bad[fixed]).argmax(1) == LABEL)


def test_enumeration_finds_every_sampled_region_and_the_buggy_ones(net):
    mlp = net[0]
    regions, complete = enumerate_regions(mlp, LOWER, UPPER, Deadline(60))
    assert complete
    x = np.random.default_rng(5).uniform(-1, 1, (20000, 2))
    sampled = {pattern_key(p) for p in mlp.patterns(x)}
    assert sampled <= {r.key for r in regions}
    clauses = _label_clauses(3, LABEL)
    buggy = {r.key for r in regions if any(region_violation(r, A, b, 0.0) is not None for A, b in clauses)}
    bad = x[mlp.forward(x).argmax(1) != LABEL]
    assert {pattern_key(p) for p in mlp.patterns(bad)} <= buggy



def test_flood_from_a_buggy_point_returns_its_grid_connected_buggy_regions(net):
    """Oracle: a dense grid, 4-neighbour connectivity among the violating grid points."""
    mlp = net[0]
    n = 401
    axis = np.linspace(-1, 1, n)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    # One clause "y_label - y_0 <= t", t such that a fifth of the box violates.
    row = np.zeros((1, 3))
    row[0, LABEL], row[0, 0] = 1.0, -1.0
    margin = mlp.forward(grid) @ row[0]
    clauses = [(row, np.array([np.quantile(margin, 0.2)]))]
    regions, _ = enumerate_regions(mlp, LOWER, UPPER, Deadline(60))
    buggy = {r.key for r in regions if any(region_violation(r, A, b, 0.0) is not None for A, b in clauses)}
    seed = grid[np.argmin(margin)]
    flooded, complete = enumerate_regions(
        mlp, LOWER, UPPER, Deadline(60), seeds=seed[None, :],
        accept=lambda r: any(region_violation(r, A, b, 0.0) is not None for A, b in clauses))
    assert complete
    keys = {r.key for r in flooded}
    assert pattern_key(mlp.patterns(seed[None, :])[0]) in keys
    assert keys <= buggy
    grid_keys = np.array([pattern_key(p) for p in mlp.patterns(grid)]).reshape(n, n)
    inside = (margin <= clauses[0][1][0]).reshape(n, n)
    start = tuple(np.unravel_index(np.argmin(margin), (n, n)))
    reached, stack = np.zeros((n, n), dtype=bool), [start]
    reached[start] = True
    while stack:
        i, j = stack.pop()
        for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= a < n and 0 <= b < n and inside[a, b] and not reached[a, b]:
                reached[a, b] = True
                stack.append((a, b))
    assert set(grid_keys[reached]) <= keys
    assert len(keys) < len(regions)  # a flood, not the whole box


NNET = """// tiny test network
2,2,2,3,
2,3,2,
0,
-1.0,0.0,
1.0,10.0,
0.5,5.0,0.25,
2.0,10.0,4.0,
1.0,-1.0,
0.5,0.5,
-1.0,2.0,
0.0,
-0.5,
1.0,
1.0,0.0,2.0,
0.0,1.0,-1.0,
0.1,
-0.2,
"""


def _hand_forward(x_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalised-input scores, full .nnet semantics) computed by hand for NNET."""
    x = np.clip(x_raw, [-1.0, 0.0], [1.0, 10.0])
    xn = (x - [0.5, 5.0]) / [2.0, 10.0]
    h = np.maximum(np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 2.0]]) @ xn + [0.0, -0.5, 1.0], 0)
    y = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]) @ h + [0.1, -0.2]
    return y, y * 4.0 + 0.25


def test_nnet_reader_and_conversion_match_a_hand_computed_forward_pass(tmp_path):
    path = tmp_path / "tiny.nnet"
    path.write_text(NNET)
    nnet = read_nnet(path)
    points = np.array([[0.3, 2.0], [-0.9, 9.5], [0.99, 0.1]])
    for x in points:
        scores, full = _hand_forward(x)
        np.testing.assert_allclose(nnet.forward_raw(x)[0], full, atol=1e-12)
        xn = (x - [0.5, 5.0]) / [2.0, 10.0]
        np.testing.assert_allclose(nnet.forward_normalized(xn)[0], scores, atol=1e-12)
    for mode in ("raw", "normalized"):
        out = tmp_path / f"tiny_{mode}.onnx"
        onnx.save(nnet_to_onnx(nnet, mode), out)
        network = load_network(out)
        feed = points if mode == "raw" else (points - [0.5, 5.0]) / [2.0, 10.0]
        expected = np.stack([_hand_forward(x)[1 if mode == "raw" else 0] for x in points])
        np.testing.assert_allclose(run_onnxruntime(network, feed), expected, rtol=1e-5, atol=1e-5)


def test_malformed_nnet_names_the_line(tmp_path):
    from verirepair.errors import InputError

    path = tmp_path / "bad.nnet"
    path.write_text(NNET.replace("1.0,-1.0,\n", "1.0,oops,\n"))
    with pytest.raises(InputError, match="line"):
        read_nnet(path)


def _residual_cnn() -> onnx.ModelProto:
    """[1, 1, 3, 3] → Conv(2, 3×3, pad 1) → ReLU → Flatten → Gemm(6) → ReLU → Gemm(3), plus a
    Gemm of the flattened input added at the output: a ReLU DAG that is no chain."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(21)

    def tensor(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    inits = [tensor("cw", 2, 1, 3, 3), tensor("cb", 2), tensor("w1", 6, 18), tensor("b1", 6), tensor("w2", 3, 6),
             tensor("b2", 3), tensor("ws", 9, 3)]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["d"], transB=1), helper.make_node("Relu", ["d"], ["h"]),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["main"], transB=1),
             helper.make_node("Flatten", ["x"], ["xf"]), helper.make_node("MatMul", ["xf", "ws"], ["skip"]),
             helper.make_node("Add", ["main", "skip"], ["y"])]
    return F.build_model(nodes, [("x", [1, 1, 3, 3])], [("y", [1, 3])], inits)


def test_regions_and_patches_of_a_relu_dag_keep_its_graph(tmp_path):
    path = F.save(_residual_cnn(), tmp_path / "residual.onnx")
    network = load_network(path)
    relu = relu_network_of(network)
    assert relu.patterns(np.zeros((1, 9))).shape == (1, 18 + 6)
    rng = np.random.default_rng(22)
    centre = rng.uniform(-1, 1, 9)
    lower, upper = centre - 0.1, centre + 0.1
    x = rng.uniform(lower, upper, (20000, 9))
    keys = np.array([pattern_key(p) for p in relu.patterns(x)])
    region = linear_region_of(relu, x[0], lower, upper, prune=False)
    same = keys == keys[0]
    assert same.sum() > 1
    np.testing.assert_array_equal(region.contains(x), same)
    np.testing.assert_allclose(x[same] @ region.W.T + region.c, relu.forward(x[same]), atol=1e-10)
    # A patch making the smallest output at x[0] the largest on its region, written beside the original graph.
    label = int(np.argmin(relu.forward(x[:1])[0]))
    clauses = _label_clauses(3, label)
    patch = minimal_patch(region, clauses, np.vstack([A for A, _ in clauses]), (lower, upper), 1e-3)
    K = patch.bound_on_box(lower, upper) * 1.01 + 1e-6
    patches = [RegionPatch(region.A, region.b, 1.0 / max(1e-3, chebyshev_centre(region)[1] * 0.05),
                           patch.C, patch.d, K, region.key, patch.norm)]
    out = tmp_path / "patched.onnx"
    original = read_onnx_model(path)
    onnx.save(patched_model(original, mlp_to_onnx(patch_mlp(patches, 9, 3), network), network), out)
    written = read_onnx_model(out)
    assert [n.op_type for n in written.graph.node][:len(original.graph.node)] == [n.op_type for n in original.graph.node]
    probe = np.vstack([x[:300], x[same][:50]])
    written_network = load_network(out)
    ort = run_onnxruntime(written_network, probe)
    with torch.no_grad():
        ours = written_network.forward(torch.as_tensor(probe)).numpy()
    # The file holds the patch's weights in float32 (the original's type) and onnxruntime computes
    # in float32; the patch is steep (slope ~1/(0.05·radius)), which amplifies both roundings to
    # ~1e-2 on these outputs (of size ~10). The verifier proves the exact semantics of the file as
    # written; these check that the file is the patched network and that onnxruntime agrees.
    np.testing.assert_allclose(ort, ours, atol=2e-2, rtol=1e-3)
    np.testing.assert_allclose(ours, patched_reference(relu, patches, probe), atol=2e-2, rtol=1e-3)
    assert np.all(ort[:300][same[:300]].argmax(1) == label)


def test_a_patch_beside_an_ir3_opset8_model_runs_in_onnxruntime(benchmarks, tmp_path):
    """ACAS Xu files are IR 3 (initializers declared as inputs), opset 8: the patched file keeps both."""
    path = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_9_batch_2000.onnx"
    network = load_network(path)
    original = read_onnx_model(path)
    rows = np.vstack([np.eye(5), -np.eye(5)])
    d = np.array([0.5, -0.25, 0.0, 0.0, 0.125])
    patches = [RegionPatch(rows, np.full(10, 0.3), 10.0, np.zeros((5, 5)), d, 1.0, "box", 0.5)]
    out = tmp_path / "patched.onnx"
    onnx.save(patched_model(original, mlp_to_onnx(patch_mlp(patches, 5, 5), network), network), out)
    written = read_onnx_model(out)
    assert written.ir_version == original.ir_version and written.opset_import == original.opset_import
    x = np.random.default_rng(23).uniform(-0.5, 0.5, (200, 5))
    expected = run_onnxruntime(network, x) + patches[0].value(x)
    np.testing.assert_allclose(run_onnxruntime(load_network(out), x), expected, atol=1e-5, rtol=1e-5)
    assert np.any(patches[0].value(x) != 0) and np.any(patches[0].value(x) == 0)


@pytest.mark.parametrize("layout", ["chain", "stacked"])
def test_a_patched_file_can_be_patched_again(benchmarks, tmp_path, layout):
    """Patching a file that already carries a patch (the names the patch needs are taken) stacks
    the second patch beside the first: onnxruntime gives the original plus both patches."""
    from verirepair.repair.reassure.stacked import stacked_patches_onnx

    path = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_9_batch_2000.onnx"
    network = load_network(path)
    rows = np.vstack([np.eye(5), -np.eye(5)])
    first = RegionPatch(rows, np.full(10, 0.3), 10.0, np.zeros((5, 5)), np.array([0.5, -0.25, 0.0, 0.0, 0.125]), 1.0, "a", 0.5)
    second = RegionPatch(rows, np.full(10, 0.2), 10.0, np.zeros((5, 5)), np.array([-0.125, 0.0, 0.25, 0.0, 0.0]), 1.0, "b", 0.25)

    def patch_model(patch: RegionPatch, like):
        return mlp_to_onnx(patch_mlp([patch], 5, 5), like) if layout == "chain" else stacked_patches_onnx([patch], like)

    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    onnx.save(patched_model(read_onnx_model(path), patch_model(first, network), network), once)
    patched_once = load_network(once)
    onnx.save(patched_model(read_onnx_model(once), patch_model(second, patched_once), patched_once), twice)
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (300, 5))
    expected = run_onnxruntime(network, x) + first.value(x) + second.value(x)
    np.testing.assert_allclose(run_onnxruntime(load_network(twice), x), expected, atol=1e-5, rtol=1e-5)
    assert np.any(second.value(x) != 0) and np.any(first.value(x) != 0)
