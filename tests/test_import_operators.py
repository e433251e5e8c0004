"""Every converted ONNX operator agrees with onnxruntime, over its attribute and opset variants, on a
batch of several points (the file declares a batch of 1); every shared benchmark network does too.

Each case is a tiny model built with onnx.helper: one operator (or a short shape subgraph) with
random float32 weights. The oracle is onnxruntime running the saved file point by point.
"""

from __future__ import annotations

import gzip
import inspect
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verirepair.errors import InputError, UnsupportedError
from verirepair.network import CONVERTERS, Network, load_network, run_onnxruntime

BATCH = 4
# Our float64 forward against onnxruntime's float32 kernels: float32 rounding over a few dozen
# terms of size O(1) stays near 1e-6, relative to the outputs' size.
ATOL = 1e-5
INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Case:
    """One operator node ``op(x, *extra)`` → y; ``extra`` entries are (name, array) constants or
    "" for an absent optional input; ``then`` are more nodes after it (the last one writes y)."""

    op: str
    in_shape: Sequence[int]
    extra: Sequence[tuple[str, np.ndarray] | str] = ()
    opset: int = 13
    attrs: dict[str, object] = field(default_factory=dict)
    outputs: Sequence[str] = ("y",)
    then: Sequence[onnx.NodeProto] = ()
    before: Sequence[onnx.NodeProto] = ()  # nodes ahead of the op (e.g. Constant nodes)


def weights(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def build(case: Case) -> onnx.ModelProto:
    """The case's model; its output shape comes from running it once in onnxruntime."""
    inputs = ["x"] + [e if isinstance(e, str) else e[0] for e in case.extra]
    inits = [numpy_helper.from_array(e[1], e[0]) for e in case.extra if not isinstance(e, str)]
    nodes = list(case.before) + [helper.make_node(case.op, inputs, list(case.outputs), name="op_under_test",
                                                  **case.attrs)] + list(case.then)

    def model(out_shape: Sequence[int] | None) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(case.in_shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
        made.ir_version = 8 if case.opset <= 18 else 9
        return made

    session = ort.InferenceSession(model(None).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(["y"], {"x": np.zeros(case.in_shape, dtype=np.float32)})
    final = model(list(y.shape))
    # No full_check: where onnx's shape inference and onnxruntime disagree (the ceil_mode window
    # that starts in the padding) the declared shape is onnxruntime's, the oracle's.
    onnx.checker.check_model(final)
    return final


def conv_case(rank: int, channels: int = 4, out_channels: int = 6, kernel: int = 3, group: int = 1,
              bias: bool = True, transpose: bool = False, size: int = 7, **attrs: object) -> Case:
    if transpose:
        w_shape = (channels, out_channels // group) + (kernel,) * rank
        b_size = out_channels
    else:
        w_shape = (out_channels, channels // group) + (kernel,) * rank
        b_size = out_channels
    extra: list[tuple[str, np.ndarray] | str] = [("W", weights(1, *w_shape))]
    if bias:
        extra.append(("B", weights(2, b_size)))
    return Case("ConvTranspose" if transpose else "Conv", (1, channels) + (size,) * rank, extra,
                attrs=dict(attrs, group=group))


def split_then_concat(parts: int) -> list[onnx.NodeProto]:
    """Concat of the parts in reverse order, so a wrong split point shows in the output."""
    return [helper.make_node("Concat", [f"p{i}" for i in reversed(range(parts))], ["y"], axis=1)]


def shape_subgraph() -> list[onnx.NodeProto]:
    """torch.onnx.export's ``x.view(x.size(0), -1)`` after a Shape node writing "shape":
    Gather → Unsqueeze → Concat → Reshape (then a Relu)."""
    def constant(name: str, dims: list[int], values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(f"{name}_value", TensorProto.INT64,
                                                                                 dims, values))

    return [constant("zero", [], [0]), constant("minus_one", [1], [-1]), constant("axes", [1], [0]),
            helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
            helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
            helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["flat"]),
            helper.make_node("Relu", ["flat"], ["y"])]


X4 = (1, 2, 3, 4)
CASES: dict[str, Case] = {
    # linear layers
    "gemm": Case("Gemm", (1, 4), [("W", weights(1, 4, 3)), ("C", weights(2, 3))]),
    "gemm_transB_alpha_beta": Case("Gemm", (1, 4), [("W", weights(1, 3, 4)), ("C", weights(2, 1, 3))],
                                   attrs={"transB": 1, "alpha": 0.5, "beta": -2.0}),
    "gemm_no_bias": Case("Gemm", (1, 4), [("W", weights(1, 3, 4))], attrs={"transB": 1}),
    "gemm_opset9": Case("Gemm", (1, 4), [("W", weights(1, 4, 3)), ("C", weights(2, 3))], opset=9),
    "matmul": Case("MatMul", (1, 4), [("W", weights(1, 4, 3))]),
    "matmul_rank3": Case("MatMul", (1, 2, 4), [("W", weights(1, 4, 3))]),
    "matmul_broadcast": Case("MatMul", (1, 2, 2, 4), [("W", weights(1, 2, 4, 3))]),
    "conv2d": conv_case(2),
    "conv2d_pads_strides": conv_case(2, pads=[1, 2, 0, 1], strides=[2, 1]),
    "conv2d_dilations": conv_case(2, dilations=[2, 1], pads=[1, 1, 1, 1]),
    "conv2d_groups": conv_case(2, group=2, strides=[2, 2]),
    "conv2d_depthwise_no_bias": conv_case(2, out_channels=8, group=4, bias=False, pads=[1, 1, 1, 1]),
    "conv2d_auto_pad_valid": conv_case(2, auto_pad="VALID", strides=[2, 2]),
    "conv2d_kernel_shape": conv_case(2, kernel_shape=[3, 3]),
    "conv1d": conv_case(1, size=9),
    "conv1d_pads_strides_dilations": conv_case(1, size=9, pads=[2, 1], strides=[2], dilations=[2]),
    "conv1d_groups": conv_case(1, size=9, group=2),
    "conv3d": conv_case(3, channels=2, out_channels=2, size=4, pads=[1, 0, 1, 0, 1, 0]),
    "conv_transpose2d": conv_case(2, transpose=True, size=4),
    "conv_transpose2d_strides_pads": conv_case(2, transpose=True, size=4, strides=[2, 3], pads=[1, 0, 0, 2]),
    "conv_transpose2d_output_padding": conv_case(2, transpose=True, size=4, strides=[2, 2], output_padding=[1, 0],
                                                 pads=[1, 1, 1, 1]),
    "conv_transpose2d_dilations_groups": conv_case(2, transpose=True, size=4, dilations=[2, 1], group=2,
                                                   strides=[2, 1]),
    "conv_transpose2d_no_bias": conv_case(2, transpose=True, size=4, bias=False, strides=[2, 2]),
    "conv_transpose1d": conv_case(1, transpose=True, size=5, strides=[3], pads=[2, 1], output_padding=[2]),
    "batch_norm": Case("BatchNormalization", (1, 3, 4, 4),
                       [("scale", weights(1, 3)), ("bias", weights(2, 3)), ("mean", weights(3, 3)),
                        ("var", np.abs(weights(4, 3)) + 0.1)], attrs={"epsilon": 1e-3}),
    "batch_norm_rank2_opset9": Case("BatchNormalization", (1, 3),
                                    [("scale", weights(1, 3)), ("bias", weights(2, 3)), ("mean", weights(3, 3)),
                                     ("var", np.abs(weights(4, 3)) + 0.1)], opset=9),
    "batch_norm_opset15": Case("BatchNormalization", (1, 3, 5),
                               [("scale", weights(1, 3)), ("bias", weights(2, 3)), ("mean", weights(3, 3)),
                                ("var", np.abs(weights(4, 3)) + 0.1)], opset=15),
    # element-wise, with broadcasting
    "add_last_axis": Case("Add", X4, [("C", weights(1, 4))]),
    "add_scalar": Case("Add", X4, [("C", scalar(0.75))]),
    "sub_middle_axes": Case("Sub", X4, [("C", weights(1, 3, 1))]),
    "mul_channel": Case("Mul", X4, [("C", weights(1, 1, 2, 1, 1))]),
    "div_full": Case("Div", X4, [("C", np.abs(weights(1, 1, 2, 3, 4)) + 0.5)]),
    "neg": Case("Neg", X4),
    "relu": Case("Relu", X4),
    "leaky_relu": Case("LeakyRelu", X4),
    "leaky_relu_alpha": Case("LeakyRelu", X4, attrs={"alpha": 0.3}),
    "sigmoid": Case("Sigmoid", X4),
    "tanh": Case("Tanh", X4),
    "clip_opset6_attributes": Case("Clip", X4, opset=6, attrs={"min": -0.5, "max": 0.7}),
    "clip_opset6_min_only": Case("Clip", X4, opset=6, attrs={"min": -0.5}),
    "clip_opset13_inputs": Case("Clip", X4, [("low", scalar(-0.5)), ("high", scalar(0.7))]),
    "clip_opset13_min_only": Case("Clip", X4, [("low", scalar(-0.5))]),
    "clip_opset13_max_only": Case("Clip", X4, ["", ("high", scalar(0.7))]),
    "clip_opset11_no_bounds": Case("Clip", X4, opset=11),
    "identity": Case("Identity", X4),
    "dropout_opset13": Case("Dropout", X4, [("ratio", scalar(0.5))]),
    "dropout_opset10": Case("Dropout", X4, opset=10, attrs={"ratio": 0.3}),
    "dropout_unused_mask": Case("Dropout", X4, opset=10, outputs=["y", "mask"]),
    "max_pool_unused_indices": Case("MaxPool", (1, 2, 4, 4), attrs={"kernel_shape": [2, 2]}, outputs=["y", "indices"]),
    "cast_to_float": Case("Cast", X4, attrs={"to": int(TensorProto.FLOAT)}),
    "constant": Case("Add", X4, ["c"], before=[helper.make_node(
        "Constant", [], ["c"], value=numpy_helper.from_array(weights(5, 3, 4), "c_value"))]),
    # shapes
    "concat_axis1": Case("Concat", X4, [("C", weights(1, 1, 3, 3, 4))], attrs={"axis": 1}),
    "concat_negative_axis": Case("Concat", X4, [("C", weights(1, 1, 2, 3, 2)), ("D", weights(2, 1, 2, 3, 1))],
                                 attrs={"axis": -1}),
    "slice_axis1": Case("Slice", X4, [("starts", ints(1)), ("ends", ints(2)), ("axes", ints(1))]),
    "slice_negative_indices": Case("Slice", X4, [("starts", ints(-3)), ("ends", ints(-1)), ("axes", ints(-1))]),
    "slice_steps": Case("Slice", X4, [("starts", ints(0, 3)), ("ends", ints(INT64_MAX, 0)), ("axes", ints(3, 2)),
                                      ("steps", ints(2, -2))]),
    "slice_negative_step_to_start": Case("Slice", X4, [("starts", ints(-1)), ("ends", ints(-INT64_MAX)),
                                                       ("axes", ints(2)), ("steps", ints(-1))]),
    "slice_whole_batch_no_axes": Case("Slice", X4, [("starts", ints(0, 1)), ("ends", ints(INT64_MAX, 2))]),
    "slice_opset9_attributes": Case("Slice", X4, opset=9, attrs={"starts": [0, 1], "ends": [1, -1], "axes": [0, 3]}),
    "slice_opset9_no_axes": Case("Slice", X4, opset=9, attrs={"starts": [0, 0, 1], "ends": [1, 1, 100]}),
    "split_input": Case("Split", (1, 3, 4), [("split", ints(1, 2))], attrs={"axis": 1}, outputs=["p0", "p1"],
                        then=split_then_concat(2)),
    "split_opset11_attribute": Case("Split", (1, 3, 4), opset=11, attrs={"axis": 1, "split": [2, 1]},
                                    outputs=["p0", "p1"], then=split_then_concat(2)),
    "split_equal_parts": Case("Split", (1, 4, 2), attrs={"axis": -2}, outputs=["p0", "p1"],
                              then=split_then_concat(2)),
    "split_opset18_num_outputs": Case("Split", (1, 5, 2), opset=18, attrs={"axis": 1, "num_outputs": 3},
                                      outputs=["p0", "p1", "p2"], then=split_then_concat(3)),
    "reshape_zero_minus_one": Case("Reshape", X4, [("shape", ints(0, -1, 2))]),
    "reshape_leading_one": Case("Reshape", X4, [("shape", ints(1, 4, 6))]),
    "reshape_leading_minus_one": Case("Reshape", X4, [("shape", ints(-1, 24))]),
    "reshape_one_minus_one": Case("Reshape", X4, [("shape", ints(1, -1))]),
    "reshape_allowzero": Case("Reshape", X4, [("shape", ints(1, 3, -1))], opset=14, attrs={"allowzero": 1}),
    "flatten_axis1": Case("Flatten", X4),
    "flatten_axis2": Case("Flatten", (1, 1, 3, 4), attrs={"axis": 2}),
    "flatten_negative_axis": Case("Flatten", X4, attrs={"axis": -3}),
    "flatten_last_axis": Case("Flatten", (1, 1, 6), attrs={"axis": -1}),
    "transpose": Case("Transpose", X4, attrs={"perm": [0, 2, 3, 1]}),
    "squeeze_opset11_attribute": Case("Squeeze", (1, 3, 1, 4), opset=11, attrs={"axes": [2]}),
    "squeeze_negative_input": Case("Squeeze", (1, 3, 1, 4), [("axes", ints(-2))]),
    "unsqueeze_opset11_attribute": Case("Unsqueeze", (1, 3, 4), opset=11, attrs={"axes": [1, -1]}),
    "unsqueeze_input": Case("Unsqueeze", (1, 3, 4), [("axes", ints(2))]),
    "unsqueeze_negative_input": Case("Unsqueeze", (1, 3, 4), [("axes", ints(-1, -3))]),
    "gather_axis1": Case("Gather", X4, [("index", ints(1, 0, -1))], attrs={"axis": -1}),
    "pad_inputs": Case("Pad", X4, [("pads", ints(0, 0, 1, 2, 0, 1, 2, 0)), ("value", scalar(0.5))],
                       attrs={"mode": "constant"}),
    "pad_opset11_default_value": Case("Pad", X4, [("pads", ints(0, 1, 0, 1, 0, 0, 2, 0))], opset=11),
    "pad_negative_crops": Case("Pad", X4, [("pads", ints(0, 0, -1, 1, 0, 0, 0, -2))]),
    "pad_opset2_attributes": Case("Pad", X4, opset=2, attrs={"pads": [0, 0, 1, 1, 0, 0, 0, 2], "value": -1.5}),
    "pad_opset18_axes": Case("Pad", X4, [("pads", ints(2, 1, 0, 3)), ("value", scalar(0.25)), ("axes", ints(-1, 1))],
                             opset=18),
    "average_pool": Case("AveragePool", (1, 2, 5, 5), attrs={"kernel_shape": [3, 3], "strides": [2, 2]}),
    "average_pool_pads_exclude": Case("AveragePool", (1, 2, 5, 5),
                                      attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]}),
    "average_pool_pads_include": Case("AveragePool", (1, 2, 5, 5),
                                      attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2],
                                                 "count_include_pad": 1}),
    "average_pool_ceil": Case("AveragePool", (1, 2, 6, 6), attrs={"kernel_shape": [3, 3], "strides": [2, 2],
                                                                     "ceil_mode": 1}),
    "average_pool_ceil_pads_include": Case("AveragePool", (1, 2, 5, 6),
                                           attrs={"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1,
                                                      "pads": [1, 1, 0, 0], "count_include_pad": 1}),
    "average_pool_ceil_pads_exclude": Case("AveragePool", (1, 2, 5, 6),
                                           attrs={"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1,
                                                      "pads": [1, 1, 0, 0]}),
    # the last window ceil_mode adds would start in the end padding: onnxruntime drops it (onnx's
    # shape inference keeps it)
    "average_pool_ceil_window_dropped": Case("AveragePool", (1, 2, 5, 6),
                                             attrs={"kernel_shape": [2, 2], "strides": [3, 3], "ceil_mode": 1,
                                                        "pads": [0, 0, 1, 0], "count_include_pad": 1}),
    "average_pool_1d": Case("AveragePool", (1, 2, 9), attrs={"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    "global_average_pool": Case("GlobalAveragePool", (1, 3, 4, 5)),
    "global_average_pool_1d": Case("GlobalAveragePool", (1, 3, 6)),
    "max_pool": Case("MaxPool", (1, 2, 4, 4), attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
    "max_pool_pads": Case("MaxPool", (1, 2, 5, 5), attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 2, 1]}),
    "max_pool_dilations": Case("MaxPool", (1, 2, 7, 7), attrs={"kernel_shape": [2, 2], "dilations": [2, 3]}),
    "max_pool_ceil": Case("MaxPool", (1, 2, 6, 7), attrs={"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max_pool_ceil_pads": Case("MaxPool", (1, 2, 6, 6), attrs={"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1,
                                                                   "pads": [1, 1, 1, 1]}),
    "max_pool_ceil_window_dropped": Case("MaxPool", (1, 2, 6, 5), attrs={"kernel_shape": [2, 2], "strides": [3, 3],
                                                                             "ceil_mode": 1, "pads": [0, 0, 0, 1]}),
    "max_pool_1d": Case("MaxPool", (1, 2, 9), attrs={"kernel_shape": [3], "strides": [2], "pads": [1, 0]}),
    # the shape subgraph torch.onnx.export writes for x.view(x.size(0), -1), folded away
    "shape_subgraph": Case("Shape", X4, outputs=["shape"], then=shape_subgraph()),
}
CASES["shape_constant_of_shape"] = Case("Shape", X4, outputs=["shape"], opset=15, attrs={"start": 1}, then=[
    helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                     value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.5])),
    helper.make_node("Cast", ["ones"], ["ones_float"], to=int(TensorProto.FLOAT)),
    helper.make_node("Mul", ["x", "ones_float"], ["y"])])


def float32_points(seed: int, n: int, dim: int) -> np.ndarray:
    """Points exactly representable in float32, so onnxruntime sees the very same inputs."""
    return np.random.default_rng(seed).uniform(-2.0, 2.0, (n, dim)).astype(np.float32).astype(np.float64)


def assert_matches_onnxruntime(network: Network, x: np.ndarray, rtol: float = ATOL, atol: float = ATOL) -> None:
    expected = run_onnxruntime(network, x)
    with torch.no_grad():
        ours = network.forward(torch.from_numpy(x)).numpy()
    assert ours.shape == expected.shape == (x.shape[0], network.n_outputs)
    scale = float(np.max(np.abs(expected), initial=1.0))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=atol + rtol * scale)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator_cases")


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_onnxruntime(name: str, case_dir: Path) -> None:
    path = case_dir / f"{name}.onnx"
    onnx.save(build(CASES[name]), str(path))
    network = load_network(path)
    assert network.nodes, "the case keeps an input-dependent operation"
    x = float32_points(zlib.crc32(name.encode()), BATCH, network.n_inputs)
    assert_matches_onnxruntime(network, x)


def test_every_converter_has_a_case() -> None:
    covered = {case.op for case in CASES.values()} | {n.op_type for c in CASES.values() for n in c.then}
    assert not set(CONVERTERS) - covered, f"converters without a case: {sorted(set(CONVERTERS) - covered)}"


def test_shape_subgraphs_fold_away(case_dir: Path) -> None:
    path = case_dir / "shape_subgraph_fold.onnx"
    onnx.save(build(CASES["shape_subgraph"]), str(path))
    assert load_network(path).op_types == ["Reshape", "Relu"]
    path = case_dir / "constant_fold.onnx"
    onnx.save(build(CASES["constant"]), str(path))
    assert load_network(path).op_types == ["Add"]


class ExportedNet(torch.nn.Module):
    """A small CNN whose export holds torch's shape subgraph (``h.view(h.size(0), -1)``), Slice,
    Concat, LeakyRelu and Clip; exported with a symbolic batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.norm = torch.nn.BatchNorm2d(3)
        self.linear = torch.nn.Linear(27, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.leaky_relu(self.norm(self.conv(x)))
        h = torch.cat([h[:, 1:], h[:, :1]], dim=1)
        return self.linear(h.view(h.size(0), -1)).clamp(min=-0.5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its retirement
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torch_export_with_symbolic_batch(opset: int, case_dir: Path) -> None:
    path = case_dir / f"exported_{opset}.onnx"
    module = ExportedNet().eval()
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(module, (torch.zeros(1, 2, 6, 6),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=opset, **options)
    exported = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Shape", "Gather", "Unsqueeze", "Slice"} <= exported, exported
    network = load_network(path)
    assert not {"Shape", "Gather", "Unsqueeze", "Constant"} & set(network.op_types), network.op_types
    x = float32_points(opset, BATCH, network.n_inputs)
    assert_matches_onnxruntime(network, x)
    with torch.no_grad():
        by_torch = module(torch.from_numpy(x).float().reshape(BATCH, 2, 6, 6)).double().numpy()
        np.testing.assert_allclose(network.forward(torch.from_numpy(x)).numpy(), by_torch, rtol=0, atol=ATOL)


# ----- refusals: one line naming the node and the reason ------------------------------------------
REFUSED: dict[str, tuple[Case, str]] = {
    "pad_reflect": (Case("Pad", X4, [("pads", ints(0, 0, 1, 1, 0, 0, 1, 1))], attrs={"mode": "reflect"}),
                    "mode=reflect"),
    "conv_auto_pad_same": (conv_case(2, auto_pad="SAME_UPPER"), "auto_pad=SAME_UPPER"),
    "reshape_merges_batch": (Case("Reshape", X4, [("shape", ints(2, 12))]), "batch"),
    "concat_batch_axis": (Case("Concat", X4, [("C", weights(1, 1, 2, 3, 4))], attrs={"axis": 0}), "batch axis"),
    "flatten_axis0": (Case("Flatten", X4, attrs={"axis": 0}), "batch"),
    "squeeze_no_axes": (Case("Squeeze", (1, 3, 1, 4)), "batch"),
    "slice_inside_batch": (Case("Slice", X4, [("starts", ints(1)), ("ends", ints(2)), ("axes", ints(0))]),
                           "batch axis"),
    "cast_to_float16": (Case("Cast", X4, attrs={"to": int(TensorProto.FLOAT16)}, outputs=["half"],
                             then=[helper.make_node("Cast", ["half"], ["y"], to=int(TensorProto.FLOAT))]), "FLOAT16"),
    "dropout_training_mode": (Case("Dropout", X4, [("ratio", scalar(0.5)), ("training", np.array(True))]),
                              "training mode"),
    "max_pool_indices_used": (Case("MaxPool", (1, 2, 4, 4), attrs={"kernel_shape": [2, 2]}, outputs=["pooled", "indices"],
                                    then=[helper.make_node("Cast", ["indices"], ["cast"], to=int(TensorProto.FLOAT)),
                                          helper.make_node("Add", ["pooled", "cast"], ["y"])]), "indices"),
    "conv_transpose_output_shape": (conv_case(2, transpose=True, size=4, strides=[2, 2], output_shape=[9, 9]),
                                    "output_shape"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_attribute_is_one_line_naming_the_node(name: str, case_dir: Path) -> None:
    case, reason = REFUSED[name]
    path = case_dir / f"refused_{name}.onnx"
    onnx.save(build(case), str(path))
    with pytest.raises(UnsupportedError) as caught:
        load_network(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert f"node 'op_under_test' ({case.op})" in message and reason in message, message


def test_unsupported_operators_in_constant_subgraphs_fold(case_dir: Path) -> None:
    """An operator without a converter is fine where it only computes constants (here Range)."""
    case = Case("Add", (1, 4), ["c"], before=[
        helper.make_node("Constant", [], ["start"], value=helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Constant", [], ["limit"], value=helper.make_tensor("l", TensorProto.FLOAT, [], [4.5])),
        helper.make_node("Constant", [], ["delta"], value=helper.make_tensor("d", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Range", ["start", "limit", "delta"], ["c"])])
    path = case_dir / "range_constant.onnx"
    onnx.save(build(case), str(path))
    network = load_network(path)
    assert network.op_types == ["Add"]
    assert_matches_onnxruntime(network, float32_points(0, BATCH, 4))


def test_unsupported_operators_are_listed_together(case_dir: Path) -> None:
    """Both unsupported operators, and nothing downstream of them that is supported (the Shape)."""
    case = Case("Erf", (1, 4), outputs=["y0"], then=[
        helper.make_node("Softmax", ["y0"], ["soft"], axis=1),
        helper.make_node("Shape", ["soft"], ["shape"]),
        helper.make_node("Reshape", ["soft", "shape"], ["y"])])
    path = case_dir / "two_unsupported.onnx"
    onnx.save(build(case), str(path))
    with pytest.raises(UnsupportedError, match="unsupported operators: Erf, Softmax$"):
        load_network(path)


def test_constant_evaluation_failure_names_the_node(case_dir: Path) -> None:
    case = Case("Add", (1, 4), ["c"], before=[
        helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(weights(1, 2, 3), "a_value")),
        helper.make_node("Reshape", ["a", "bad_shape"], ["c"], name="bad_reshape")])
    nodes = list(case.before) + [helper.make_node("Add", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(ints(4, 4), "bad_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = case_dir / "bad_constant.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InputError) as caught:
        load_network(path)
    assert "node 'bad_reshape' (Reshape)" in str(caught.value) and "\n" not in str(caught.value)


# ----- every shared benchmark network ------------------------------------------------------------
BENCHMARK_FOLDERS = ("acasxu", "mnist_fc", "verivital", "eran", "sri_resnet_a", "oval21", "collins_rul_cnn")
# Benchmark nets have hundreds of terms per neuron and outputs up to ~80: float32 rounding
# relative to the output size.
BENCH_RTOL, BENCH_ATOL = 1e-5, 1e-5


def networks_in(folder: Path) -> list[Path]:
    paths = sorted(p for p in (folder / "onnx").iterdir() if p.name.endswith((".onnx", ".onnx.gz")))
    if folder.name == "acasxu" and len(paths) > 3:  # 45 networks of one architecture: three suffice
        paths = [paths[0], paths[len(paths) // 2], paths[-1]]
    return paths


@pytest.mark.parametrize("folder", BENCHMARK_FOLDERS)
def test_benchmark_networks_match_onnxruntime(folder: str, benchmarks: Path) -> None:
    if not (benchmarks / folder / "onnx").is_dir():
        pytest.skip(f"benchmark folder {benchmarks / folder / 'onnx'} is absent")
    paths = networks_in(benchmarks / folder)
    assert paths, f"no ONNX networks in {benchmarks / folder / 'onnx'}"
    for index, path in enumerate(paths):
        network = load_network(path)
        x = np.random.default_rng(index).uniform(0.0, 1.0, (3, network.n_inputs)).astype(np.float32).astype(np.float64)
        assert_matches_onnxruntime(network, x, rtol=BENCH_RTOL, atol=BENCH_ATOL)


def test_gzip_compressed_network_loads_by_content(case_dir: Path) -> None:
    """A gzip-compressed file (as some benchmark folders ship) loads and runs like the plain one."""
    path = case_dir / "conv_compressed.onnx.gz"
    path.write_bytes(gzip.compress(build(CASES["conv2d_pads_strides"]).SerializeToString()))
    network = load_network(path)
    assert network.op_types == ["Conv"]
    assert_matches_onnxruntime(network, float32_points(1, BATCH, network.n_inputs))
