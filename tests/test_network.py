"""ONNX front end: every converter and every benchmark network agrees with onnxruntime; bad files
are refused with one line naming the file; converter models lower to an equivalent `Chain`."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import onnx_factory
import onnxruntime as ort
import pytest
import torch

from verirepair.bounds import build_graph
from verirepair.errors import InputError, UnsupportedError
from verirepair.network import (
    Network,
    check_import_agrees,
    load_network,
    run_onnxruntime,
)

# Our float64 forward vs onnxruntime's float32 kernels on O(1) values: float32 rounding over a
# few dozen terms stays near 1e-6, so 1e-5 is tight enough to catch any wrong semantics.
ATOL = 1e-5
# Benchmark nets have hundreds of terms per neuron and outputs up to ~50: allow float32 rounding
# relative to the output size too (observed max |Δ| ≈ 1e-5 on outputs ≈ 46).
BENCH_RTOL, BENCH_ATOL = 1e-5, 1e-5


def float32_points(rng: np.random.Generator, n: int, dim: int, low: float, high: float) -> np.ndarray:
    """Points exactly representable in float32, so onnxruntime sees the very same inputs."""
    return rng.uniform(low, high, (n, dim)).astype(np.float32).astype(np.float64)


def ours(network: Network, x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    with torch.no_grad():
        return network.forward(torch.from_numpy(x).to(dtype)).to(torch.float64).numpy()


@pytest.fixture(scope="module")
def converter_paths(model_dir: Path) -> dict[str, Path]:
    return {name: onnx_factory.save(build(), model_dir / f"{name}.onnx")
            for name, build in onnx_factory.CONVERTER_MODELS.items()}


# ----- converters ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(onnx_factory.CONVERTER_MODELS))
def test_converter_matches_onnxruntime(name: str, converter_paths: dict[str, Path]) -> None:
    network = load_network(converter_paths[name])
    x = float32_points(np.random.default_rng(zlib.crc32(name.encode())), 7, network.n_inputs, -2.0, 2.0)
    expected = run_onnxruntime(network, x)
    assert expected.shape == (7, network.n_outputs)
    np.testing.assert_allclose(ours(network, x, torch.float64), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours(network, x, torch.float32), expected, rtol=0, atol=ATOL)


def test_reference_runner_matches_a_plain_session(converter_paths: dict[str, Path]) -> None:
    """`run_onnxruntime` (our oracle) against an onnxruntime session driven by hand."""
    path = converter_paths["conv_pads_stride2"]
    network = load_network(path)
    x = float32_points(np.random.default_rng(1), 3, 72, -1.0, 1.0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    by_hand = np.stack([session.run(None, {"x": p.astype(np.float32).reshape(1, 2, 6, 6)})[0].reshape(-1) for p in x])
    np.testing.assert_array_equal(run_onnxruntime(network, x), by_hand.astype(np.float64))


def test_reference_runner_follows_a_file_rewritten_in_place(tmp_path: Path) -> None:
    """A file overwritten at the same path (a repair candidate, an edit) is run as it is now,
    not as an earlier call's cached session saw it."""
    path = tmp_path / "net.onnx"
    x = np.random.default_rng(2).uniform(-1.0, 1.0, size=(5, 4))
    outputs = []
    for seed in (0, 1, 0):
        onnx_factory.save(onnx_factory.mlp(4, 8, 3, seed=seed), path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        by_hand = np.stack([session.run(None, {"x": p.astype(np.float32).reshape(1, 4)})[0].reshape(-1) for p in x])
        outputs.append(run_onnxruntime(load_network(path), x))
        np.testing.assert_array_equal(outputs[-1], by_hand.astype(np.float64))
    assert not np.allclose(outputs[0], outputs[1])


def test_analytic_mlp_has_its_closed_form(converter_paths: dict[str, Path]) -> None:
    network = load_network(converter_paths["analytic_mlp"])
    x = float32_points(np.random.default_rng(2), 20, 2, 0.0, 1.0)
    np.testing.assert_allclose(ours(network, x, torch.float64), onnx_factory.analytic_mlp_outputs(x), atol=1e-12)


def test_shapes_and_metadata(converter_paths: dict[str, Path]) -> None:
    network = load_network(converter_paths["conv_pads_stride2"])
    assert network.input_shape == (1, 2, 6, 6) and network.output_shape == (1, 3, 3, 3)
    assert (network.n_inputs, network.n_outputs) == (72, 27)
    assert network.input_dtype == np.float32
    assert network.op_types == ["Conv"]
    folded = load_network(converter_paths["constant"])
    assert folded.op_types == ["Add"], "the Constant node is folded away"


@pytest.mark.parametrize("name", onnx_factory.CHAIN_MODELS)
def test_bound_graph_equals_network(name: str, converter_paths: dict[str, Path]) -> None:
    network = load_network(converter_paths[name])
    if "transA" in name:  # a Transpose that swaps the batch axis away, for Gemm transA: refused by name
        with pytest.raises(UnsupportedError, match="across the batch axis"):
            build_graph(network)
        return
    graph = build_graph(network)
    assert (graph.n_inputs, graph.n_outputs) == (network.n_inputs, network.n_outputs)
    x = torch.from_numpy(float32_points(np.random.default_rng(3), 9, network.n_inputs, -2.0, 2.0))
    with torch.no_grad():
        np.testing.assert_allclose(graph.forward(x).numpy(), network.forward(x).numpy(), rtol=0, atol=1e-9)


# ----- real benchmark networks ---------------------------------------------------------------------
def benchmark_networks(root: Path) -> list[Path]:
    acasxu = sorted((root / "acasxu" / "onnx").glob("*.onnx"))
    picked = [acasxu[0], acasxu[len(acasxu) // 2], acasxu[-1]] if len(acasxu) >= 3 else acasxu
    others = [p for folder in ("mnist_fc", "verivital", "eran") for p in sorted((root / folder / "onnx").glob("*.onnx"))]
    return picked + others


def test_benchmark_networks_match_onnxruntime(benchmarks: Path) -> None:
    paths = benchmark_networks(benchmarks)
    folders = {p.parent.parent.name for p in paths}
    assert folders == {"acasxu", "mnist_fc", "verivital", "eran"}, f"benchmark folders missing: {folders}"
    assert sum("acasxu" in str(p) for p in paths) >= 3
    rng = np.random.default_rng(4)
    for path in paths:
        network = load_network(path)
        low, high = (-0.5, 0.5) if path.parent.parent.name == "acasxu" else (0.0, 1.0)
        x = float32_points(rng, 6, network.n_inputs, low, high)
        expected = run_onnxruntime(network, x)
        for dtype in (torch.float64, torch.float32):
            np.testing.assert_allclose(ours(network, x, dtype), expected, rtol=BENCH_RTOL, atol=BENCH_ATOL,
                                       err_msg=f"{path.name} ({dtype})")
        lower, upper = np.full(network.n_inputs, low), np.full(network.n_inputs, high)
        check_import_agrees(network, lower, upper, n_points=2)  # raises on disagreement


def test_import_check_refuses_a_disagreeing_network(converter_paths: dict[str, Path]) -> None:
    network = load_network(converter_paths["relu"])
    network.nodes[0] = dataclasses.replace(network.nodes[0], operation=torch.sigmoid)  # a wrong import
    with pytest.raises(InputError, match="disagrees with onnxruntime"):
        check_import_agrees(network, -np.ones(5), np.ones(5))


def test_import_check_allows_the_rounding_of_an_ill_conditioned_network(tmp_path: Path) -> None:
    """onnxruntime's float32 result is far from the exact one (beyond the output-relative
    tolerance), as is our own float32 evaluation: rounding, not a wrong import, so it is accepted;
    the same network with a wrong operator is still refused."""
    network = load_network(onnx_factory.save(onnx_factory.cancelling(), tmp_path / "cancelling.onnx"))
    x = np.linspace(0.0, 1.0, 18).reshape(-1, 1)
    exact = network.forward(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(exact, float(np.float32(0.3)), rtol=1e-12)  # the stored bias, exactly
    assert np.max(np.abs(run_onnxruntime(network, x) - exact)) > 1e-3
    check_import_agrees(network, np.zeros(1), np.ones(1))
    network.nodes[1] = dataclasses.replace(network.nodes[1], operation=torch.sigmoid)  # a wrong import
    with pytest.raises(InputError, match="disagrees with onnxruntime"):
        check_import_agrees(network, np.zeros(1), np.ones(1))


# ----- refusals --------------------------------------------------------------------------------
def assert_one_line_naming(error: InputError, path: Path, *words: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def test_unsupported_operators_are_all_listed(model_dir: Path) -> None:
    path = onnx_factory.save(onnx_factory.unsupported_ops(), model_dir / "unsupported.onnx")
    with pytest.raises(UnsupportedError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "Erf", "Softmax", "unsupported")


def test_several_inputs_are_refused(model_dir: Path) -> None:
    path = onnx_factory.save(onnx_factory.two_inputs(), model_dir / "two_inputs.onnx")
    with pytest.raises(UnsupportedError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "left", "right", "input")


def test_several_outputs_are_refused(model_dir: Path) -> None:
    path = onnx_factory.save(onnx_factory.two_outputs(), model_dir / "two_outputs.onnx")
    with pytest.raises(UnsupportedError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "first_out", "second_out", "output")


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a network\n(assert (<= X_0 1))\n")
    with pytest.raises(InputError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "ONNX")


@pytest.mark.parametrize("source", ["factory", "acasxu"])
def test_truncated_onnx_is_refused(source: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if source == "acasxu":
        root: Path = request.getfixturevalue("benchmarks")
        data = sorted((root / "acasxu" / "onnx").glob("*.onnx"))[0].read_bytes()
    else:
        data = onnx_factory.mlp().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "ONNX")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.onnx"
    with pytest.raises(InputError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        load_network(path)
    assert_one_line_naming(caught.value, path, "ONNX")


def test_refused_files_are_left_unchanged(model_dir: Path) -> None:
    path = onnx_factory.save(onnx_factory.unsupported_ops(), model_dir / "unsupported_unchanged.onnx")
    before = path.read_bytes()
    with pytest.raises(UnsupportedError):
        load_network(path)
    assert path.read_bytes() == before
