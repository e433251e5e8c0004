"""Tiny ONNX models built in memory with onnx.helper, for the front-end and CLI tests.

Every builder returns an ``onnx.ModelProto`` (float32, opset 13 unless the op needs another);
`save` writes one to a path. Shapes carry a leading batch dimension of 1, as the benchmark files
do. Weights come from a fixed seed so every run builds the same files.

`CONVERTER_MODELS` maps a name to a builder for each supported operator family (one op per
model where possible); `CHAIN_MODELS` are the names `verirepair.bounds.build_graph` must build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
FLOAT = TensorProto.FLOAT


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        array = array.astype(np.int64)
    return numpy_helper.from_array(array, name)


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = shape[-1] if len(shape) > 1 else 1
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def build_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[tuple[str, Sequence[int]]],
                outputs: Sequence[tuple[str, Sequence[int]]], initializers: Sequence[onnx.TensorProto] = (),
                opset: int = OPSET, name: str = "tiny") -> onnx.ModelProto:
    """A checked model from nodes, (name, shape) inputs/outputs and initialisers."""
    graph = helper.make_graph(
        list(nodes), name,
        [helper.make_tensor_value_info(n, FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, FLOAT, list(s)) for n, s in outputs],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="verirepair-tests")
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _single(op: str, in_shape: Sequence[int], out_shape: Sequence[int], extra_inputs: Sequence[onnx.TensorProto] = (),
            opset: int = OPSET, **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"] + [t.name for t in extra_inputs], ["y"], name=op.lower(), **attrs)
    return build_model([node], [("x", in_shape)], [("y", out_shape)], extra_inputs, opset)


# ----- networks ---------------------------------------------------------------------------------
def mlp(n_in: int = 4, hidden: int = 8, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Gemm → Relu → Gemm → Relu → Gemm (transB=1, the PyTorch export layout)."""
    rng = _rng(seed)
    sizes = [n_in, hidden, hidden, n_out]
    nodes, inits = [], []
    current = "x"
    for k in range(3):
        w, b = f"W{k}", f"b{k}"
        inits += [_const(w, _weights(rng, sizes[k + 1], sizes[k])), _const(b, 0.1 * rng.standard_normal(sizes[k + 1]))]
        out = "y" if k == 2 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=f"gemm{k}", transB=1))
        if k < 2:
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"], name=f"relu{k}"))
            current = f"h{k}"
    return build_model(nodes, [("x", [1, n_in])], [("y", [1, n_out])], inits)


def cancelling() -> onnx.ModelProto:
    """y = relu(K·x + c) - relu(K·x) for x in [0, 1] with K = 1e7: c = 0.3 in real arithmetic, but
    float32 keeps only about 1 of the intermediate values' 8 digits that c occupies, so any float32
    evaluation is off by up to about 0.5 (a steep REASSURE-style patch term)."""
    w1 = np.array([[1e7], [1e7]], dtype=np.float32)
    b1 = np.array([0.3, 0.0], dtype=np.float32)
    w2 = np.array([[1.0, -1.0]], dtype=np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    return build_model(nodes, [("x", [1, 1])], [("y", [1, 1])],
                       [_const("w1", w1), _const("b1", b1), _const("w2", w2)])


def analytic_mlp() -> onnx.ModelProto:
    """2 → 3 → 2 ReLU net with a closed form (used for CLI verdicts with known answers).

    h = relu([x0 + x1, x0 - x1, x1 - x0]);  y0 = h0 - h1 - h2,  y1 = h1 + h2.
    On x >= 0: y0 = 2·min(x0, x1) and y1 = |x0 - x1|.
    """
    w0 = np.array([[1, 1], [1, -1], [-1, 1]], dtype=np.float32)
    w1 = np.array([[1, -1, -1], [0, 1, 1]], dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z0"], name="gemm0", transB=1),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("Gemm", ["h0", "W1", "b1"], ["y"], name="gemm1", transB=1),
    ]
    inits = [_const("W0", w0), _const("b0", np.zeros(3)), _const("W1", w1), _const("b1", np.zeros(2))]
    return build_model(nodes, [("x", [1, 2])], [("y", [1, 2])], inits)


def analytic_mlp_outputs(x: np.ndarray) -> np.ndarray:
    """The closed form of `analytic_mlp` for points x >= 0 (rows)."""
    x = np.atleast_2d(x)
    return np.stack([2 * np.minimum(x[:, 0], x[:, 1]), np.abs(x[:, 0] - x[:, 1])], axis=1)


# ----- one model per operator family ---------------------------------------------------------------
def matmul() -> onnx.ModelProto:
    return _single("MatMul", [1, 4], [1, 3], [_const("W", _weights(_rng(1), 4, 3))])


def elementwise(op: str, constant_first: bool = False) -> onnx.ModelProto:
    """``x op C`` (or ``C op x``) with C broadcast over the batch; divisors kept away from zero."""
    rng = _rng(2)
    c = rng.uniform(0.5, 2.0, (2, 3)) * rng.choice([-1.0, 1.0], (2, 3))
    inputs = ["C", "x"] if constant_first else ["x", "C"]
    node = helper.make_node(op, inputs, ["y"], name=op.lower())
    return build_model([node], [("x", [1, 2, 3])], [("y", [1, 2, 3])], [_const("C", c)])


def activation(op: str) -> onnx.ModelProto:
    return _single(op, [1, 5], [1, 5])


def flatten() -> onnx.ModelProto:
    return _single("Flatten", [1, 2, 3, 4], [1, 24], axis=1)


def reshape(target: Sequence[int], out_shape: Sequence[int]) -> onnx.ModelProto:
    return _single("Reshape", [1, 2, 3, 4], out_shape, [_const("shape", np.array(target, dtype=np.int64))])


def conv(pads: Sequence[int] | None = None, strides: Sequence[int] = (1, 1)) -> onnx.ModelProto:
    rng = _rng(3)
    w, b = _const("W", _weights(rng, 3, 2, 3, 3)), _const("B", 0.1 * rng.standard_normal(3))
    pads = list(pads) if pads is not None else [0, 0, 0, 0]
    out = [(6 + pads[d] + pads[d + 2] - 3) // strides[d] + 1 for d in range(2)]
    attrs: dict[str, object] = {"kernel_shape": [3, 3], "strides": list(strides)}
    if any(pads):
        attrs["pads"] = pads
    return _single("Conv", [1, 2, 6, 6], [1, 3] + out, [w, b], **attrs)


def batch_norm() -> onnx.ModelProto:
    rng = _rng(4)
    params = [_const("scale", rng.uniform(0.5, 2.0, 3)), _const("bias", rng.standard_normal(3)),
              _const("mean", rng.standard_normal(3)), _const("var", rng.uniform(0.2, 3.0, 3))]
    return _single("BatchNormalization", [1, 3, 4, 4], [1, 3, 4, 4], params, epsilon=1e-3)


def average_pool(pads: Sequence[int] | None = None, count_include_pad: int = 0) -> onnx.ModelProto:
    pads = list(pads) if pads is not None else [0, 0, 0, 0]
    out = [(5 + pads[d] + pads[d + 2] - 3) // 2 + 1 for d in range(2)]
    attrs: dict[str, object] = {"kernel_shape": [3, 3], "strides": [2, 2], "count_include_pad": count_include_pad}
    if any(pads):
        attrs["pads"] = pads
    return _single("AveragePool", [1, 2, 5, 5], [1, 2] + out, **attrs)


def max_pool() -> onnx.ModelProto:
    return _single("MaxPool", [1, 2, 4, 4], [1, 2, 2, 2], kernel_shape=[2, 2], strides=[2, 2])


def pad() -> onnx.ModelProto:
    """Constant-mode Pad (opset 13: pads and the fill value are inputs), uneven spatial pads."""
    pads = _const("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64))
    value = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "value")
    return _single("Pad", [1, 2, 3, 3], [1, 2, 6, 6], [pads, value], mode="constant")


def constant() -> onnx.ModelProto:
    """A Constant node feeding an Add."""
    c = numpy_helper.from_array(_rng(5).standard_normal((1, 4)).astype(np.float32), "c_value")
    nodes = [helper.make_node("Constant", [], ["c"], name="constant", value=c),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    return build_model(nodes, [("x", [1, 4])], [("y", [1, 4])])


def identity() -> onnx.ModelProto:
    return _single("Identity", [1, 4], [1, 4])


def transpose() -> onnx.ModelProto:
    return _single("Transpose", [1, 2, 3, 4], [1, 3, 4, 2], perm=[0, 2, 3, 1])


def squeeze() -> onnx.ModelProto:
    return _single("Squeeze", [1, 3, 1, 4], [1, 3, 4], [_const("axes", np.array([-2], dtype=np.int64))])


def unsqueeze(axes: Sequence[int], out_shape: Sequence[int]) -> onnx.ModelProto:
    return _single("Unsqueeze", [1, 3, 4], out_shape, [_const("axes", np.array(axes, dtype=np.int64))])


def concat(axis: int) -> onnx.ModelProto:
    """``Concat(x, C)`` with a constant of batch size 1 (x is [1, 2, 3])."""
    c_shape = [1, 2, 3]
    c_shape[axis] = 4
    out = [1, 2, 3]
    out[axis] += 4
    c = _const("C", _rng(6).standard_normal(c_shape))
    return _single("Concat", [1, 2, 3], out, [c], axis=axis)


def gemm(trans_a: int, trans_b: int, alpha: float, beta: float, bias: bool = True) -> onnx.ModelProto:
    """Gemm with its attributes; with transA the input is transposed first (batch on axis 1)."""
    rng = _rng(7)
    w = _weights(rng, 3, 4) if trans_b else _weights(rng, 4, 3)
    inits = [_const("W", w)] + ([_const("C", rng.standard_normal((1, 3)))] if bias else [])
    operands = ["xt" if trans_a else "x", "W"] + (["C"] if bias else [])
    nodes = []
    if trans_a:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], name="transpose", perm=[1, 0]))
    nodes.append(helper.make_node("Gemm", operands, ["y"], name="gemm", transA=trans_a, transB=trans_b,
                                  alpha=alpha, beta=beta))
    return build_model(nodes, [("x", [1, 4])], [("y", [1, 3])], inits)


CONVERTER_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "analytic_mlp": analytic_mlp,
    "matmul": matmul,
    "add": lambda: elementwise("Add"),
    "sub": lambda: elementwise("Sub"),
    "sub_constant_first": lambda: elementwise("Sub", constant_first=True),
    "mul": lambda: elementwise("Mul"),
    "div": lambda: elementwise("Div"),
    "relu": lambda: activation("Relu"),
    "sigmoid": lambda: activation("Sigmoid"),
    "tanh": lambda: activation("Tanh"),
    "flatten": flatten,
    "reshape_leading_one": lambda: reshape([1, 4, 6], [1, 4, 6]),
    "reshape_leading_minus_one": lambda: reshape([-1, 24], [1, 24]),
    "reshape_zero_and_minus_one": lambda: reshape([0, -1, 2], [1, 12, 2]),
    "conv": conv,
    "conv_pads_stride2": lambda: conv(pads=[1, 1, 1, 1], strides=(2, 2)),
    "conv_uneven_pads_stride2": lambda: conv(pads=[1, 0, 0, 1], strides=(2, 2)),
    "batch_norm": batch_norm,
    "average_pool": average_pool,
    "average_pool_pads_exclude": lambda: average_pool([1, 1, 1, 1], count_include_pad=0),
    "average_pool_pads_include": lambda: average_pool([1, 1, 1, 1], count_include_pad=1),
    "max_pool": max_pool,
    "pad": pad,
    "constant": constant,
    "identity": identity,
    "transpose": transpose,
    "squeeze": squeeze,
    "unsqueeze": lambda: unsqueeze([1], [1, 1, 3, 4]),
    "unsqueeze_negative": lambda: unsqueeze([-1], [1, 3, 4, 1]),
    "concat_axis1": lambda: concat(1),
    "concat_last_axis": lambda: concat(2),
    "gemm_transB_alpha_beta": lambda: gemm(0, 1, alpha=0.5, beta=2.0),
    "gemm_transA_transB": lambda: gemm(1, 1, alpha=1.5, beta=-0.5),
    "gemm_transA_no_bias": lambda: gemm(1, 0, alpha=2.0, beta=1.0, bias=False),
}

# Every converter model is a single chain of operations, so the bound engine must build each.
CHAIN_MODELS = tuple(CONVERTER_MODELS)


# ----- models the importer must refuse ------------------------------------------------------------
def unsupported_ops() -> onnx.ModelProto:
    """Relu → Erf → Softmax: two operators verirepair does not support."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Erf", ["a"], ["b"], name="erf"),
             helper.make_node("Softmax", ["b"], ["y"], name="softmax", axis=1)]
    return build_model(nodes, [("x", [1, 4])], [("y", [1, 4])])


def two_inputs() -> onnx.ModelProto:
    node = helper.make_node("Add", ["left", "right"], ["y"], name="add")
    return build_model([node], [("left", [1, 4]), ("right", [1, 4])], [("y", [1, 4])])


def two_outputs() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["first_out"], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["second_out"], name="sigmoid")]
    return build_model(nodes, [("x", [1, 4])], [("first_out", [1, 4]), ("second_out", [1, 4])])
