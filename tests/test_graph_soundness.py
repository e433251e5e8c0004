"""Soundness of the graph bound engine on random DAG models, with onnxruntime as the oracle.

- Random tiny DAG models (residual MLPs, residual conv blocks with projections, 1-D and 2-D
  convolutions with asymmetric padding, dilation, groups and strides, two-branch
  Concat, pooling, S-shaped and clipped activations, reshapes and transposes, fan-out, Add/Sub of
  two dynamic values) are written with `onnx.helper`, loaded with `load_network` and bounded by
  IBP, CROWN and α-CROWN over random boxes; every sampled output evaluated by onnxruntime must
  respect every bound, and so must every sampled pre-activation (exposed as extra ONNX outputs).
- The linear lower bounds behind CROWN and α-CROWN hold at every sampled point; after a ReLU
  split (a ``prior`` on its input, then α-CROWN with multipliers on the bounds) each domain's
  bounds hold on its side.
- Orderings that hold by construction: α-CROWN >= CROWN >= IBP for output bounds, CROWN layer
  bounds inside IBP's; on affine DAGs CROWN is exact (the minimum over the box's vertices).
- On the ReLU chains of the shared benchmarks the engine's CROWN agrees with a small dense CROWN
  written here from the layers' matrices.
- A model with several nodes the engine cannot bound is refused with all of them in one error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verirepair.bounds import (
    BoundEngine,
    BoundGraph,
    BoundRelu,
    LayerBounds,
    build_graph,
)
from verirepair.errors import UnsupportedError
from verirepair.network import load_network
from verirepair.spec import parse_vnnlib

pytestmark = pytest.mark.usefixtures("single_torch_thread")

F64 = torch.float64
METHODS = ("ibp", "crown", "alpha-crown")
# onnxruntime evaluates in float32: every operation rounds with relative error 2^-24 ≈ 6e-8, and a
# value of these tiny networks goes through at most ~12 operations with sums of <= 50 terms of
# magnitude O(1 + |y|), so its float32 value is within ~4e-5·(1 + |y|) of the exact one. 1e-4
# relative slack covers that with room, while a wrong bound misses by far more (O(0.1) and up).
FLOAT32_SLACK = 1e-4
# The same values in float64 (the network's own evaluation) differ from exact ones by ~1e-14.
FLOAT64_SLACK = 1e-9
UNIFORM_SAMPLES = 1500
VERTEX_SAMPLES = 300

# ----- random DAG models ------------------------------------------------------------------------
class ModelBuilder:
    """Nodes of a float32 ONNX model (opset 13) whose input ``x`` has a symbolic batch dimension.
    Helpers return the name of the value they make, and its shape (batch dimension excluded)
    where it changes."""

    def __init__(self, rng: np.random.Generator, input_shape: tuple[int, ...]) -> None:
        self.rng = rng
        self.input_shape = input_shape
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.values: list[str] = []  # every node output, in order

    def const(self, array: np.ndarray) -> str:
        name = f"c{len(self.initializers)}"
        array = np.asarray(array)
        dtype = np.float32 if np.issubdtype(array.dtype, np.floating) else np.int64
        self.initializers.append(numpy_helper.from_array(array.astype(dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        output = f"v{len(self.nodes)}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"n{len(self.nodes)}_{op_type}", **attrs))
        self.values.append(output)
        return output

    def weights(self, *shape: int, fan_in: int) -> np.ndarray:
        return self.rng.standard_normal(shape) * (1.5 / math.sqrt(fan_in))

    def dense(self, x: str, n_in: int, n_out: int) -> str:
        """Gemm (either weight layout) or MatMul + Add."""
        weight = self.weights(n_out, n_in, fan_in=n_in)
        bias = 0.3 * self.rng.standard_normal(n_out)
        style = self.rng.integers(3)
        if style == 0:
            return self.op("Gemm", [x, self.const(weight), self.const(bias)], transB=1)
        if style == 1:
            return self.op("Gemm", [x, self.const(2 * weight.T), self.const(bias)], alpha=float(self.rng.choice([-0.5, 0.5])),
                           beta=2.0)
        return self.op("Add", [self.op("MatMul", [x, self.const(weight.T)]), self.const(bias)])

    def activation(self, x: str, kinds: tuple[str, ...] = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip")) -> str:
        kind = str(self.rng.choice(kinds))
        if kind == "LeakyRelu":
            return self.op(kind, [x], alpha=float(self.rng.choice([0.01, 0.2, -0.5, 1.5])))
        if kind == "Clip":
            low, high = sorted(self.rng.normal(size=2))
            which = self.rng.integers(3)  # a lower limit, an upper limit or both
            operands = [x, self.const(np.array(low)) if which != 1 else "", self.const(np.array(high)) if which else ""]
            return self.op(kind, operands[:3] if which else operands[:2])
        return self.op(kind, [x])

    def constant_op(self, x: str, shape: tuple[int, ...]) -> str:
        """Add, Sub (either side), Mul or Div by a constant: a scalar or one value per element."""
        op_type = str(self.rng.choice(["Add", "Sub", "Mul", "Div"]))
        size = shape if self.rng.random() < 0.5 else ()
        constant = self.rng.uniform(0.5, 2.0, size=size) * self.rng.choice([-1.0, 1.0], size=size)
        name = self.const(constant)
        if op_type in ("Add", "Sub", "Mul") and self.rng.random() < 0.5:
            return self.op(op_type, [name, x])
        return self.op(op_type, [x, name])

    def conv(self, x: str, shape: tuple[int, ...], c_out: int, kernel: int, stride: int, pad: int,
             group: int = 1, pads: list[int] | None = None, dilation: int = 1) -> tuple[str, tuple[int, ...]]:
        """A 1-D or 2-D convolution (by the rank of ``shape``); ``pads`` (begins, then ends) replaces
        the same ``pad`` on every side."""
        c_in, *spatial = shape
        rank = len(spatial)
        pads = pads or [pad] * (2 * rank)
        weight = self.weights(c_out, c_in // group, *[kernel] * rank, fan_in=c_in // group * kernel**rank)
        bias = 0.3 * self.rng.standard_normal(c_out)
        out = self.op("Conv", [x, self.const(weight), self.const(bias)], kernel_shape=[kernel] * rank,
                      strides=[stride] * rank, pads=pads, group=group, dilations=[dilation] * rank)
        sizes = [(n + pads[i] + pads[i + rank] - dilation * (kernel - 1) - 1) // stride + 1 for i, n in enumerate(spatial)]
        return out, (c_out, *sizes)

    def batch_norm(self, x: str, channels: int) -> str:
        rng = self.rng
        scale = rng.uniform(0.5, 1.5, channels) * rng.choice([-1.0, 1.0], channels)
        return self.op("BatchNormalization", [x, self.const(scale),
                                              self.const(rng.normal(size=channels) * 0.3),
                                              self.const(rng.normal(size=channels) * 0.3),
                                              self.const(rng.uniform(0.5, 2.0, channels))], epsilon=1e-3)

    def pool(self, x: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        c, h, w = shape
        kind = self.rng.integers(3)
        if kind == 0:
            return self.op("GlobalAveragePool", [x]), (c, 1, 1)
        stride = int(self.rng.integers(1, 3))
        size = lambda n, pad: (n + 2 * pad - 2) // stride + 1
        if kind == 1:
            return self.op("MaxPool", [x], kernel_shape=[2, 2], strides=[stride, stride]), (c, size(h, 0), size(w, 0))
        pad = int(self.rng.integers(2))
        return (self.op("AveragePool", [x], kernel_shape=[2, 2], strides=[stride, stride], pads=[pad] * 4,
                        count_include_pad=int(self.rng.integers(2))), (c, size(h, pad), size(w, pad)))

    def flatten(self, x: str, shape: tuple[int, ...]) -> tuple[str, int]:
        if self.rng.random() < 0.5:
            return self.op("Flatten", [x], axis=1), math.prod(shape)
        return self.op("Reshape", [x, self.const(np.array([-1, math.prod(shape)]))]), math.prod(shape)

    def model(self, output: str, n_out: int, extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
        """The model with output ``output`` [N, n_out] (and ``extra_outputs`` of any shape)."""
        outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", n_out])]
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in extra_outputs]
        graph = helper.make_graph(self.nodes, "dag", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, ["N", *self.input_shape])], outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        return model


def residual_mlp(b: ModelBuilder) -> tuple[str, int]:
    """``act(W2·act(W1·x)) + x`` blocks (the block input has two readers), constants in between."""
    n = b.input_shape[0]
    h = "x"
    for _ in range(int(b.rng.integers(1, 3))):
        inner = b.activation(b.dense(h, n, n), ("Relu", "LeakyRelu"))
        branch = b.activation(b.dense(inner, n, n), ("Relu", "Sigmoid", "Clip"))
        h = b.op("Add", [branch, h] if b.rng.random() < 0.5 else [h, branch])
        if b.rng.random() < 0.5:
            h = b.constant_op(h, (n,))
    n_out = int(b.rng.integers(1, 4))
    return b.dense(h, n, n_out), n_out


def conv_residual(b: ModelBuilder) -> tuple[str, int]:
    """Conv → BN → Relu → Conv → Add with the block input (or its strided 1×1 projection), then a
    pool, Flatten and Gemm."""
    shape = b.input_shape
    channels = shape[0]
    widened = channels * int(b.rng.integers(1, 3))
    group = channels if b.rng.random() < 0.5 else 1
    stride = int(b.rng.integers(1, 3))
    h, mid = b.conv("x", shape, widened, 3, stride, 1, group)
    h = b.op("Relu", [b.batch_norm(h, widened)])
    h, out_shape = b.conv(h, mid, channels, 3, 1, 1)
    skip = "x" if stride == 1 else b.conv("x", shape, channels, 1, stride, 0)[0]
    h = b.op("Relu", [b.op("Add", [h, skip])])
    h, pooled = b.pool(h, out_shape)
    flat, n = b.flatten(h, pooled)
    n_out = int(b.rng.integers(1, 4))
    return b.dense(flat, n, n_out), n_out


def two_branches(b: ModelBuilder) -> tuple[str, int]:
    """Two branches of the input joined by Concat, elements picked (some twice) by Gather, Sub of two
    dynamic values."""
    n = b.input_shape[0]
    width = int(b.rng.integers(2, 7))
    left = b.activation(b.dense("x", n, width))
    right = b.activation(b.dense("x", n, width))
    joined = b.op("Concat", [left, right] if b.rng.random() < 0.5 else [right, left], axis=1)
    picked = b.op("Gather", [joined, b.const(b.rng.integers(0, 2 * width, 2 * width))], axis=1)  # with repeats
    difference = b.op("Sub", [b.dense(picked, 2 * width, width), right])
    h = b.activation(b.constant_op(difference, (width,)))
    n_out = int(b.rng.integers(1, 4))
    return b.dense(h, width, n_out), n_out


def reshaped(b: ModelBuilder) -> tuple[str, int]:
    """Reshape to an image, Transpose, Pad with a constant, Conv with groups, an activation, a
    pool, Flatten, Gemm."""
    n = b.input_shape[0]
    image = (2, 2, n // 4)
    h = b.op("Reshape", ["x", b.const(np.array([-1, *image]))])
    h = b.op("Transpose", [h], perm=[0, 1, 3, 2])
    pads = [int(p) for p in b.rng.integers(0, 2, size=4)]  # begin and end of both spatial axes
    fill = b.const(np.array(b.rng.normal()))
    h = b.op("Pad", [h, b.const(np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])), fill])
    conv_pads = [int(p) for p in b.rng.integers(0, 2, size=4)]
    conv_pads[2:] = [max(end, 1 - begin) for begin, end in zip(conv_pads[:2], conv_pads[2:])]  # no axis shrinks
    h, shape = b.conv(h, (2, n // 4 + pads[0] + pads[2], 2 + pads[1] + pads[3]), 4, 2, 1, 0, group=2, pads=conv_pads)
    h = b.activation(h, ("Tanh", "Relu", "LeakyRelu"))
    h, shape = b.pool(h, shape)
    flat, size = b.flatten(h, shape)
    n_out = int(b.rng.integers(1, 4))
    return b.dense(b.activation(b.dense(flat, size, 6)), 6, n_out), n_out


def conv1d(b: ModelBuilder) -> tuple[str, int]:
    """Reshape to a sequence, a 1-D Conv (dilated, asymmetric padding, strided), an activation, a
    second Conv added to the first's output (fan-out), Flatten, Gemm."""
    n = b.input_shape[0]
    h = b.op("Reshape", ["x", b.const(np.array([-1, 2, n // 2]))])
    dilation = int(b.rng.integers(1, 3))
    h, shape = b.conv(h, (2, n // 2), 3, 2, int(b.rng.integers(1, 3)), 0, pads=[int(p) for p in b.rng.integers(0, 3, 2)],
                      dilation=dilation)
    inner = b.activation(h)
    second, _ = b.conv(inner, shape, 3, 3, 1, 1)
    h = b.op("Add", [second, h])
    flat, size = b.flatten(h, shape)
    n_out = int(b.rng.integers(1, 4))
    return b.dense(flat, size, n_out), n_out


def affine_dag(b: ModelBuilder) -> tuple[str, int]:
    """No activation: the input read by two layers whose results are subtracted and concatenated,
    a value added to (or subtracted from) itself, a constant matrix times a value (MatMul(W, h))."""
    n = b.input_shape[0]
    first, second = b.dense("x", n, n), b.dense("x", n, n)
    h = b.op("Concat", [b.op("Sub", [first, second]), b.constant_op("x", (n,))], axis=1)
    h = b.op("Add", [b.dense(h, 2 * n, n), b.op("Neg", [first])])
    h = b.op("Add", [b.op(str(b.rng.choice(["Add", "Sub"])), [h, h]), h])
    rows = int(b.rng.integers(2, 5))
    column = b.op("Reshape", [h, b.const(np.array([-1, n, 1]))])
    mixed = b.op("MatMul", [b.const(b.weights(rows, n, fan_in=n)), column])
    flat, size = b.flatten(mixed, (rows, 1))
    n_out = int(b.rng.integers(1, 4))
    return b.dense(flat, size, n_out), n_out


FAMILIES: dict[str, tuple[Callable[[ModelBuilder], tuple[str, int]], Callable[[np.random.Generator], tuple[int, ...]]]] = {
    "residual_mlp": (residual_mlp, lambda rng: (int(rng.integers(4, 13)),)),
    "conv_residual": (conv_residual, lambda rng: (int(rng.integers(1, 3)), int(rng.integers(3, 5)), int(rng.integers(3, 6)))),
    "two_branches": (two_branches, lambda rng: (int(rng.integers(4, 10)),)),
    "reshaped": (reshaped, lambda rng: (4 * int(rng.integers(2, 5)),)),
    "conv1d": (conv1d, lambda rng: (2 * int(rng.integers(3, 9)),)),
    "affine_dag": (affine_dag, lambda rng: (int(rng.integers(2, 7)),)),
}


class Case:
    """One random model saved to ``folder``, its bound graph and an onnxruntime session that also
    returns every intermediate value."""

    def __init__(self, family: str, seed: int, folder: Path) -> None:
        rng = np.random.default_rng(seed)
        build, input_shape = FAMILIES[family]
        self.builder = ModelBuilder(rng, input_shape(rng))
        self.output, self.n_out = build(self.builder)
        self.path = folder / f"{family}_{seed}.onnx"
        onnx.save(self.builder.model(self.output, self.n_out), str(self.path))
        network = load_network(self.path)
        self.graph: BoundGraph = build_graph(network)
        self.engine = BoundEngine(self.graph)
        intermediates = [v for v in self.builder.values if v != self.output]
        probe = self.builder.model(self.output, self.n_out, intermediates)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
        self.session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.value_names = [self.output, *intermediates]

    @property
    def n_inputs(self) -> int:
        return math.prod(self.builder.input_shape)

    def run(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """onnxruntime's (float32) value of every node output at ``points`` [P, n_inputs], flat [P, size]."""
        x = points.numpy().astype(np.float32).reshape((-1, *self.builder.input_shape))
        results = self.session.run(self.value_names, {"x": x})
        return {name: torch.tensor(value.astype(np.float64)).reshape(len(x), -1)
                for name, value in zip(self.value_names, results)}


def float32_boxes(rng: np.random.Generator, n: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes whose corners are float32 numbers, so that sampled points rounded to float32 (what
    onnxruntime reads) stay inside them; some are wide (saturating S-shaped activations), some
    of their sides have zero width."""
    center = rng.normal(scale=1.0, size=(batch, n))
    radius = rng.uniform(0.0, 1.0, size=(batch, n)) * rng.choice([0.05, 0.3, 1.0, 3.0], size=(batch, 1))
    radius[rng.random((batch, n)) < 0.1] = 0.0  # some inputs fixed
    lower = (center - radius).astype(np.float32).astype(np.float64)
    upper = (center + radius).astype(np.float32).astype(np.float64)
    return torch.tensor(lower), torch.tensor(upper)


def sample(rng: np.random.Generator, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[B, P, n] float32-representable points of each box: uniform ones, ones on random faces and
    random vertices."""
    batch, n = lower.shape
    u = rng.random((batch, UNIFORM_SAMPLES + VERTEX_SAMPLES, n))
    face = rng.random((batch, UNIFORM_SAMPLES + VERTEX_SAMPLES, n)) < 0.3
    u = np.where(face, u.round(), u)
    u[:, UNIFORM_SAMPLES:] = u[:, UNIFORM_SAMPLES:].round()
    low, up = lower.numpy()[:, None], upper.numpy()[:, None]
    points = (low + u * (up - low)).astype(np.float32).astype(np.float64)
    return torch.tensor(np.clip(points, low, up))


def spec_rows(rng: np.random.Generator, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C = [I; -I; random rows] (lower and upper bounds of every output, and mixtures), d random."""
    C = np.concatenate([np.eye(n_out), -np.eye(n_out), rng.normal(size=(2, n_out))])
    return torch.tensor(C), torch.tensor(rng.normal(size=len(C)))


def slack(scale: torch.Tensor, relative: float) -> torch.Tensor:
    return relative * (1.0 + scale)


def check_contains(low: torch.Tensor, up: torch.Tensor, values: torch.Tensor, relative: float, what: str) -> None:
    """``values`` [B, P, n] within [low, up] [B, n] up to ``relative``·(1 + |value|)."""
    tolerance = slack(values.abs(), relative)
    below = (low.unsqueeze(1) - values - tolerance).amax().item()
    above = (values - up.unsqueeze(1) - tolerance).amax().item()
    assert below <= 0 and above <= 0, f"{what}: a sampled value lies outside its bounds by {max(below, above):.3g}"


def objective(C: torch.Tensor, d: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``C·y + d`` [B, P, m] for outputs ``y`` [B, P, n_out], and its float32 evaluation scale."""
    return y @ C.T + d, y.abs() @ C.abs().T + d.abs()


# ----- soundness against onnxruntime ------------------------------------------------------------
@given(family=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_bounds_contain_onnxruntime_samples(tmp_path_factory: pytest.TempPathFactory, family: str, seed: int) -> None:
    """IBP, CROWN and α-CROWN output and pre-activation bounds over two random boxes hold at every
    sampled point, evaluated by onnxruntime (float32) and by the bound graph itself (float64)."""
    case = Case(family, seed, tmp_path_factory.mktemp("dag"))
    rng = np.random.default_rng(seed + 1)
    lower, upper = float32_boxes(rng, case.n_inputs, batch=2)
    points = sample(rng, lower, upper)
    batch, count, _ = points.shape
    onnx_values = {k: v.reshape(batch, count, -1) for k, v in case.run(points.reshape(batch * count, -1)).items()}
    graph_values = {k: v.reshape(batch, count, -1) for k, v in case.graph.values(points.reshape(batch * count, -1)).items()}

    # the graph's float64 evaluation agrees with onnxruntime on every value both have
    shared = [name for name in case.value_names if name in graph_values]
    assert case.output in shared
    for name in shared:
        gap = (graph_values[name] - onnx_values[name]).abs() - slack(onnx_values[name].abs(), FLOAT32_SLACK)
        assert gap.amax().item() <= 0, f"{name}: the bound graph's value differs from onnxruntime's"

    C, d = spec_rows(rng, case.n_out)
    onnx_objective, scale = objective(C, d, onnx_values[case.output])
    exact_objective, _ = objective(C, d, graph_values[case.output])
    results = {method: case.engine.output_bounds(lower, upper, C, d, method, alpha_steps=8) for method in METHODS}
    bounds = {method: result.lower for method, result in results.items()}
    for method, bound in bounds.items():
        margin = (bound.unsqueeze(1) - onnx_objective - slack(scale, FLOAT32_SLACK)).amax().item()
        assert margin <= 0, f"{method}: onnxruntime output below the lower bound by {margin:.3g}"
        margin = (bound.unsqueeze(1) - exact_objective - slack(exact_objective.abs(), FLOAT64_SLACK)).amax().item()
        assert margin <= 0, f"{method}: float64 output below the lower bound by {margin:.3g}"

    # one specification matrix per box
    per_box = torch.stack([C, spec_rows(rng, case.n_out)[0]])
    bound = case.engine.output_bounds(lower, upper, per_box, d, "crown").lower
    values = onnx_values[case.output] @ per_box.transpose(1, 2) + d
    per_box_scale = onnx_values[case.output].abs() @ per_box.abs().transpose(1, 2) + d.abs()
    margin = (bound.unsqueeze(1) - values - slack(per_box_scale, FLOAT32_SLACK)).amax().item()
    assert margin <= 0, f"crown with one matrix per box: onnxruntime output below the lower bound by {margin:.3g}"

    # the linear lower bounds behind CROWN and α-CROWN hold at every point, not only their minima
    for method in ("crown", "alpha-crown"):
        coefficients, constant = results[method].coefficients, results[method].constant
        assert coefficients is not None and constant is not None
        linear = points @ coefficients.transpose(1, 2) + constant.unsqueeze(1)
        linear_scale = points.abs() @ coefficients.abs().transpose(1, 2) + constant.abs().unsqueeze(1)
        margin = (linear - exact_objective - slack(linear_scale + exact_objective.abs(), FLOAT64_SLACK)).amax().item()
        assert margin <= 0, f"{method}: its linear lower bound exceeds the float64 output by {margin:.3g}"
        margin = (linear - onnx_objective - slack(scale, FLOAT32_SLACK)).amax().item()
        assert margin <= 0, f"{method}: its linear lower bound exceeds the onnxruntime output by {margin:.3g}"

    # orderings that hold by construction (the engine keeps the better of CROWN and intervals;
    # α-CROWN starts from CROWN and keeps its best iterate)
    assert bool((bounds["crown"] >= bounds["ibp"] - slack(bounds["ibp"].abs(), FLOAT64_SLACK)).all())
    assert bool((bounds["alpha-crown"] >= bounds["crown"]).all())

    # pre-activation bounds contain the sampled pre-activations (in float64, and in float32 where
    # the pre-activation is an ONNX value); CROWN's lie inside IBP's
    layers = {method: case.engine.layer_bounds(lower, upper, method, alpha_steps=5).pre_activation
              for method in METHODS}
    for position, index in enumerate(case.graph.nonlinear):
        value = case.graph.nodes[index].inputs[0]
        for method, pre in layers.items():
            low, up = pre[position]
            check_contains(low, up, graph_values[value], FLOAT64_SLACK, f"{method} bounds of {value}")
            if value in onnx_values:
                check_contains(low, up, onnx_values[value], FLOAT32_SLACK, f"{method} bounds of {value} (onnxruntime)")
        (ibp_low, ibp_up), (crown_low, crown_up) = layers["ibp"][position], layers["crown"][position]
        assert bool((crown_low >= ibp_low - slack(ibp_low.abs(), FLOAT64_SLACK)).all())
        assert bool((crown_up <= ibp_up + slack(ibp_up.abs(), FLOAT64_SLACK)).all())


@given(family=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_point_boxes_give_the_value(tmp_path_factory: pytest.TempPathFactory, family: str, seed: int) -> None:
    """On a box of zero width every method bounds the value itself: never above it (the value is
    the graph's float64 evaluation, whose own rounding is ~1e-16 relative), and below it by no
    more than the float64 rounding budgets (a looseness of 1e-8 would mean a wrong relaxation)."""
    case = Case(family, seed, tmp_path_factory.mktemp("point"))
    rng = np.random.default_rng(seed + 1)
    x = torch.tensor(rng.normal(scale=2.0, size=(2, case.n_inputs)))
    C, d = spec_rows(rng, case.n_out)
    value = case.graph.forward(x) @ C.T + d
    for method in METHODS:
        bound = case.engine.output_bounds(x, x, C, d, method, alpha_steps=5).lower
        looseness = (value - bound) / (1.0 + value.abs())
        assert looseness.min().item() >= -1e-12, f"{method} above the value on a point box"
        assert looseness.max().item() <= 1e-8, f"{method} loose by {looseness.max().item():.3g} on a point box"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_empty_batch_gives_empty_values(tmp_path: Path, family: str) -> None:
    """A batch of no inputs (e.g. no sampled point was violating) evaluates to empty values of the
    right shapes, and to the same values a one-point batch gives when that point is added."""
    case = Case(family, 0, tmp_path)
    x = torch.zeros((0, case.n_inputs), dtype=torch.float64)
    empty, one = case.graph.values(x), case.graph.values(torch.ones((1, case.n_inputs), dtype=torch.float64))
    assert empty.keys() == one.keys()
    for name, value in empty.items():
        assert value.shape == (0,) + tuple(one[name].shape[1:]), name
    assert case.graph.forward(x).shape == (0, case.n_out)


@given(family=st.sampled_from(["conv1d", "conv_residual", "residual_mlp", "reshaped", "two_branches"]),
       seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_split_domains_bound_their_side(tmp_path_factory: pytest.TempPathFactory, family: str, seed: int) -> None:
    """Branch and bound on a ReLU: its input bounded by zero from above in one domain and from below
    in the other (a ``prior`` of `layer_bounds`), then α-CROWN with multipliers on the bounds
    (β-CROWN). Each domain's layer and output bounds hold at the sampled points on its side."""
    case = Case(family, seed, tmp_path_factory.mktemp("split"))
    rng = np.random.default_rng(seed + 1)
    lower, upper = float32_boxes(rng, case.n_inputs, batch=1)
    crown = case.engine.layer_bounds(lower, upper, "crown").pre_activation
    relus = [(position, index) for position, index in enumerate(case.graph.nonlinear)
             if isinstance(case.graph.nodes[index].op, BoundRelu)]
    unstable = [(position, index, int(j)) for position, index in relus
                for j in ((crown[position][0][0] < 0) & (crown[position][1][0] > 0)).nonzero().flatten()]
    assume(unstable)
    position, index, neuron = unstable[int(rng.integers(len(unstable)))]
    prior = []
    for k, (low, up) in enumerate(crown):
        low, up = low.repeat(2, 1), up.repeat(2, 1)
        if k == position:
            up[0, neuron], low[1, neuron] = 0.0, 0.0
        prior.append((low, up))
    lower, upper = lower.repeat(2, 1), upper.repeat(2, 1)
    layers = case.engine.layer_bounds(lower, upper, "crown", prior=LayerBounds(tuple(prior)))
    C, d = spec_rows(rng, case.n_out)
    bounds = {"crown": case.engine.output_bounds(lower, upper, C, d, "crown", layers=layers).lower,
              "beta-crown": case.engine.output_bounds(lower, upper, C, d, "alpha-crown", alpha_steps=8, layers=layers,
                                                      interval_multipliers=True).lower}

    points = sample(rng, lower[:1], upper[:1])[0]
    graph_values = case.graph.values(points)
    onnx_output = case.run(points)[case.output]
    split_value = graph_values[case.graph.nodes[index].inputs[0]].reshape(len(points), -1)[:, neuron]
    for domain, on_side in enumerate((split_value <= 0, split_value >= 0)):
        if not bool(on_side.any()):
            continue
        for position_k, node_index in enumerate(case.graph.nonlinear):
            low, up = layers.pre_activation[position_k]
            values = graph_values[case.graph.nodes[node_index].inputs[0]].reshape(len(points), -1)[on_side]
            check_contains(low[domain:domain + 1], up[domain:domain + 1], values[None], FLOAT64_SLACK,
                           f"domain {domain}: bounds of node {node_index}")
        value, scale = objective(C, d, onnx_output[on_side])
        for method, bound in bounds.items():
            margin = (bound[domain] - value - slack(scale, FLOAT32_SLACK)).amax().item()
            assert margin <= 0, f"{method}, domain {domain}: onnxruntime output below the bound by {margin:.3g}"


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_crown_is_exact_on_affine_dags(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    """Without activations CROWN's lower bound is the minimum over the box, attained at a vertex
    (all of them enumerated, evaluated by onnxruntime); intervals lose where the input fans out."""
    case = Case("affine_dag", seed, tmp_path_factory.mktemp("affine"))
    rng = np.random.default_rng(seed + 1)
    lower, upper = float32_boxes(rng, case.n_inputs, batch=1)
    n = case.n_inputs
    corners = torch.tensor(np.array(np.meshgrid(*[[0.0, 1.0]] * n, indexing="ij")).reshape(n, -1).T)
    vertices = lower + corners * (upper - lower)
    C, d = spec_rows(rng, case.n_out)
    values, scale = objective(C, d, case.run(vertices)[case.output])
    exact = values.amin(0)
    tolerance = slack(scale.amax(0), FLOAT32_SLACK)
    crown = case.engine.output_bounds(lower, upper, C, d, "crown").lower[0]
    assert bool((crown <= exact + tolerance).all()), "CROWN above the minimum: unsound"
    assert bool((crown >= exact - tolerance).all()), "CROWN below the minimum of an affine function"


# ----- equivalence with a dense CROWN on benchmark chains ---------------------------------------
def dense_layers(graph: BoundGraph) -> list[tuple[torch.Tensor, torch.Tensor] | None] | None:
    """The chain as dense (W, b) per linear node and None per ReLU; None if it is no ReLU chain."""
    layers: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    previous = graph.input
    for node in graph.nodes:
        if node.inputs != (previous,):
            return None
        previous = node.output
        if isinstance(node.op, BoundRelu):
            layers.append(None)
        elif node.is_linear:
            weight = node.op.matrices()[0].to_dense()
            bias = node.op.bias.reshape(-1) if node.op.has_bias else torch.zeros(weight.shape[0], dtype=F64)
            layers.append((weight, bias))
        else:
            return None
    return layers


def dense_crown(layers: list[tuple[torch.Tensor, torch.Tensor] | None], lower: torch.Tensor, upper: torch.Tensor,
                C: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Textbook CROWN on one box (vectors [n]): intervals of every value, narrowed by CROWN at the
    unstable inputs of ReLUs that follow a ReLU; the pre-activation bounds and the lower bounds of
    ``C·f(x)`` (the better of CROWN and intervals)."""
    bounds = [(lower, upper)]  # bounds[k]: the input of layer k

    def concretize(lam: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        center, radius = (upper + lower) / 2, (upper - lower) / 2
        return lam @ center - lam.abs() @ radius + bias

    def back_substitute(lam: torch.Tensor, depth: int) -> torch.Tensor:
        bias = torch.zeros(lam.shape[0], dtype=F64)
        for k in reversed(range(depth)):
            layer = layers[k]
            if layer is not None:
                bias = bias + lam @ layer[1]
                lam = lam @ layer[0]
                continue
            low, up = bounds[k]
            unstable = (low < 0) & (up > 0)
            up_slope = torch.where(unstable, up / torch.where(unstable, up - low, 1.0), (low >= 0).to(F64))
            up_intercept = torch.where(unstable, -up * low / torch.where(unstable, up - low, 1.0), 0.0)
            low_slope = torch.where(unstable, (up > -low).to(F64), (low >= 0).to(F64))
            bias = bias + lam.clamp(max=0) @ up_intercept
            lam = torch.where(lam >= 0, lam * low_slope, lam * up_slope)
        return concretize(lam, bias)

    seen_relu = False
    for k, layer in enumerate(layers):
        low, up = bounds[k]
        if layer is None:
            seen_relu = True
            bounds.append((low.clamp(min=0), up.clamp(min=0)))
            continue
        weight, bias = layer
        center, radius = weight @ ((up + low) / 2) + bias, weight.abs() @ ((up - low) / 2)
        low, up = center - radius, center + radius
        if seen_relu and k + 1 < len(layers) and layers[k + 1] is None:
            rows = ((low < 0) & (up > 0)).nonzero().flatten()
            unit = torch.eye(len(low), dtype=F64)[rows]
            found = back_substitute(torch.cat([unit, -unit]), k + 1)
            low, up = low.clone(), up.clone()
            low[rows] = torch.maximum(low[rows], found[: len(rows)])
            up[rows] = torch.minimum(up[rows], -found[len(rows):])
        bounds.append((low, up))
    pre = [bounds[k] for k, layer in enumerate(layers) if layer is None]
    out_low, out_up = bounds[-1]
    interval = C.clamp(min=0) @ out_low + C.clamp(max=0) @ out_up
    return pre, torch.maximum(back_substitute(C, len(layers)), interval)


# (benchmark, network, property): the box of a shipped instance, so that the ReLUs see realistic inputs
BENCHMARK_CHAINS = [
    ("acasxu", "ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
    ("acasxu", "ACASXU_run2a_3_5_batch_2000.onnx", "prop_2.vnnlib"),
    ("acasxu", "ACASXU_run2a_5_9_batch_2000.onnx", "prop_3.vnnlib"),
    ("mnist_fc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib"),
    ("mnist_fc", "mnist-net_256x6.onnx", "prop_1_0.03.vnnlib"),
    ("eran", "mnist_relu_9_200.onnx", "mnist_spec_idx_8098_eps_0.01500.vnnlib"),
]


@pytest.mark.parametrize(("benchmark", "network", "spec"), BENCHMARK_CHAINS)
def test_crown_matches_dense_reference_on_benchmark_chains(benchmarks: Path, benchmark: str, network: str,
                                                           spec: str) -> None:
    paths = [benchmarks / benchmark / "onnx" / network, benchmarks / benchmark / "vnnlib" / spec]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        pytest.skip(f"benchmark data incomplete: {', '.join(missing)} not found")
    graph = build_graph(load_network(paths[0]))
    layers = dense_layers(graph)
    assert layers is not None, f"{network} is not a chain of linear nodes and ReLUs (the dense reference covers those)"
    box = parse_vnnlib(paths[1], graph.n_inputs, graph.n_outputs).regions[0].box
    lower, upper = torch.tensor(box.lower), torch.tensor(box.upper)
    rng = np.random.default_rng(len(network))
    C = torch.tensor(np.concatenate([np.eye(graph.n_outputs), rng.normal(size=(3, graph.n_outputs))]))
    reference_pre, reference = dense_crown(layers, lower, upper, C)

    engine = BoundEngine(graph)
    engine_pre = engine.layer_bounds(lower[None], upper[None], "crown").pre_activation
    unstable = sum(int(((low < 0) & (up > 0)).sum()) for low, up in reference_pre)
    assert unstable > 0, "the box leaves every ReLU stable: the comparison would test nothing"
    for (low, up), (ref_low, ref_up) in zip(engine_pre, reference_pre):
        assert_agrees(low[0], ref_low, lower_bound=True)
        assert_agrees(up[0], ref_up, lower_bound=False)
    bound = engine.output_bounds(lower[None], upper[None], C, method="crown").lower[0]
    assert_agrees(bound, reference, lower_bound=True)


def assert_agrees(engine: torch.Tensor, reference: torch.Tensor, lower_bound: bool) -> None:
    """Agreement to 1e-8 relative: both compute the same bounds in float64, and the engine's
    rounding budgets (which only loosen its bounds) are far smaller on these networks. On the
    tight side the engine may pass the reference by float64 rounding alone."""
    scale = 1.0 + reference.abs()
    assert bool(((engine - reference).abs() <= 1e-8 * scale).all()), \
        f"largest disagreement {((engine - reference).abs() / scale).max().item():.3g} (relative)"
    tighter = (engine - reference) if lower_bound else (reference - engine)
    assert bool((tighter <= 1e-12 * scale).all()), f"the engine is tighter than CROWN by {tighter.max().item():.3g}"


# ----- unsupported nodes ------------------------------------------------------------------------
def test_every_unsupported_node_is_listed_in_one_error(tmp_path: Path) -> None:
    """The importer reads these operators, but the engine cannot bound a product of two
    input-dependent values, a division by one, or a matrix product of two: all three are named in
    one error."""
    b = ModelBuilder(np.random.default_rng(0), (4,))
    square = b.op("Mul", ["x", "x"])
    inverse = b.op("Div", [b.const(np.ones(4)), b.op("Add", [square, b.const(np.ones(4))])])
    matrix = b.op("Reshape", ["x", b.const(np.array([-1, 2, 2]))])
    product = b.op("Reshape", [b.op("MatMul", [matrix, matrix]), b.const(np.array([-1, 4]))])
    output = b.op("Relu", [b.op("Add", [inverse, product])])
    path = tmp_path / "unsupported.onnx"
    onnx.save(b.model(output, 4), str(path))
    network = load_network(path)
    with pytest.raises(UnsupportedError) as error:
        build_graph(network)
    message = str(error.value)
    for node in ("n0_Mul", "n2_Div", "n4_MatMul"):
        assert node in message, f"{node} missing from: {message}"
