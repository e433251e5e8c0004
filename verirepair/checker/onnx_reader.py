"""The certificate checker's own ONNX reader: a feed-forward network as exact affine steps, each
followed by an activation (ReLU, sigmoid or tanh) or none.

Only what fully connected networks use is read: MatMul and Gemm with a constant weight, Add and
Sub of constants, Mul by a constant, Div by a power of two, Relu, Sigmoid, Tanh, and the shape operations
Flatten, Reshape and Identity (which do not move elements of a batch-1 tensor: the network is a
function of the flattened input). Anything else is `UnsupportedNetwork`, naming the operators.

Element-wise operations by constants before the first matrix product or activation (input
normalisation) are kept apart as the network's ``input_map``, applied to input boxes with outward
rounding. Every weight is converted to float64, which is exact from float16/float32/float64, and no
arithmetic is ever done on weights: an operation that cannot be stored exactly (a Gemm scaled by
alpha, a constant added to a bias that is not zero, a Div by 3) becomes a step of its own, so the
steps compute exactly the function the file describes, in real arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rounding import down, up

FLOAT_TYPES = (1, 10, 11)  # TensorProto FLOAT, FLOAT16, DOUBLE
SHAPE_OPS = ("Flatten", "Reshape", "Identity")
ACTIVATIONS = ("Relu", "Sigmoid", "Tanh")


class UnsupportedNetwork(Exception):
    """The file is not a network this reader represents exactly (the message says why)."""


@dataclass(frozen=True)
class AffineStep:
    """``z = weight @ h + bias``, followed by ``activation`` (an ONNX operator of `ACTIVATIONS`)
    unless it is None."""

    weight: np.ndarray  # [n_out, n_in], float64
    bias: np.ndarray  # [n_out]
    activation: str | None = None

    @property
    def relu(self) -> bool:
        return self.activation == "Relu"


@dataclass(frozen=True)
class DenseNetwork:
    """``steps`` after ``input_map``: the element-wise operations by constants that come before the
    first step, ``(op, constant)`` with op one of add, sub (x - c), rsub (c - x), mul, div, applied
    to input boxes with outward rounding (`input_box`), so a leading normalisation such as a Div by
    0.3081, which no exact step can hold, is read too."""

    steps: tuple[AffineStep, ...]
    input_map: tuple[tuple[str, np.ndarray], ...] = ()

    def input_box(self, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A box containing the image of [lower, upper] ([B, n]) under ``input_map``: each operation
        is monotone per element, so the image of a box is the box between the images of its ends
        (swapped where decreasing), each computed in one float operation moved one float outward."""
        for op, c in self.input_map:
            if op == "add":
                lower, upper = down(lower + c), up(upper + c)
            elif op == "sub":
                lower, upper = down(lower - c), up(upper - c)
            elif op == "rsub":
                lower, upper = down(c - upper), up(c - lower)
            else:
                at_lower, at_upper = (lower * c, upper * c) if op == "mul" else (lower / c, upper / c)
                lower, upper = down(np.minimum(at_lower, at_upper)), up(np.maximum(at_lower, at_upper))
        return lower, upper

    @property
    def activation_sizes(self) -> list[int]:
        """The number of neurons of each step with an activation, in order: the layers that
        certificates number."""
        return [step.weight.shape[0] for step in self.steps if step.activation is not None]

    @property
    def n_inputs(self) -> int:
        return int(self.steps[0].weight.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.steps[-1].weight.shape[0])

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Outputs for inputs ``x`` [N, n_inputs] in float64 (for tests against onnxruntime)."""
        h = np.asarray(x, dtype=np.float64)
        for op, c in self.input_map:
            h = h + c if op == "add" else h - c if op == "sub" else c - h if op == "rsub" else h * c if op == "mul" else h / c
        for step in self.steps:
            h = h @ step.weight.T + step.bias
            if step.relu:
                h = np.maximum(h, 0.0)
            elif step.activation == "Sigmoid":
                h = 1.0 / (1.0 + np.exp(-h))
            elif step.activation == "Tanh":
                h = np.tanh(h)
        return h


def read_network(model_bytes: bytes, source: str | Path) -> DenseNetwork:
    try:
        return _read(model_bytes, source)
    except UnsupportedNetwork:
        raise
    except Exception as error:  # noqa: BLE001 - a protobuf this reader cannot follow is not read
        raise UnsupportedNetwork(f"cannot read {source}: {type(error).__name__}: {error}") from None


def _read(model_bytes: bytes, source: str | Path) -> DenseNetwork:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as error:  # noqa: BLE001 - any decoding failure means "not an ONNX model"
        raise UnsupportedNetwork(f"{source} is not an ONNX model ({type(error).__name__})") from None
    graph = model.graph
    unsupported = sorted({n.op_type for n in graph.node} - {"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Constant",
                                                             *ACTIVATIONS, *SHAPE_OPS})
    if unsupported:
        raise UnsupportedNetwork(f"operators the checker does not read: {', '.join(unsupported)}")
    constants: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        if tensor.data_type not in FLOAT_TYPES and tensor.data_type != 7:  # 7: INT64 (shapes)
            raise UnsupportedNetwork(f"initializer {tensor.name} has data type {tensor.data_type}")
        constants[tensor.name] = numpy_helper.to_array(tensor)
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedNetwork("the network must have one input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    trace = _Trace(inputs[0].name, shape)
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_attribute(node, numpy_helper)
            continue
        variable = [name for name in node.input if name and name not in constants]
        if variable != [trace.name] or node.input[0] != trace.name and node.op_type not in ("Add", "Sub", "Mul"):
            raise UnsupportedNetwork(f"node {node.name or node.op_type} ({node.op_type}) is not a step on the "
                                     "network's one data path")
        trace.apply(node, [constants.get(name) for name in node.input], _attributes(node))
    if graph.output[0].name != trace.name:
        raise UnsupportedNetwork("the output is not computed from the input")
    return trace.network()


def _constant_attribute(node, numpy_helper) -> np.ndarray:  # type: ignore[no-untyped-def]
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
    raise UnsupportedNetwork(f"Constant node {node.name} without a tensor value")


def _attributes(node) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _as_weights(value: np.ndarray, what: str) -> np.ndarray:
    if value.dtype.kind != "f":
        raise UnsupportedNetwork(f"{what} is not a floating-point tensor")
    converted = value.astype(np.float64)  # exact from float16/32/64
    if not np.all(np.isfinite(converted)):
        raise UnsupportedNetwork(f"{what} holds a value that is not finite")
    return converted


def _exact_power_of_two(value: float) -> bool:
    return value != 0 and math.isfinite(value) and math.frexp(value)[0] in (0.5, -0.5)


def _scaled(values: np.ndarray, factor: float) -> np.ndarray:
    """``values·factor`` for a power of two ``factor``, which is exact unless it under- or overflows."""
    scaled = values * factor
    if factor != 1.0 and not np.array_equal(scaled / factor, values):
        raise UnsupportedNetwork(f"scaling by {factor} under- or overflows float64")
    return scaled


class _Trace:
    """The data path so far: the pending steps and the current tensor's name and shape."""

    def __init__(self, name: str, shape: list[int]) -> None:
        self.name, self.shape = name, shape
        self.size = int(np.prod(shape)) if shape else 1
        self.steps: list[AffineStep] = []
        self.input_map: list[tuple[str, np.ndarray]] = []

    def network(self) -> DenseNetwork:
        if not self.steps or self.steps[-1].activation is not None:  # the steps end with an affine one
            self.steps.append(AffineStep(np.eye(self.size), np.zeros(self.size)))
        return DenseNetwork(tuple(self.steps), tuple(self.input_map))

    def map_input(self, op: str, args: list[np.ndarray | None]) -> None:
        """An element-wise operation by a constant before any step: onto ``input_map``."""
        data_first = args[0] is None
        constant = np.broadcast_to(_as_weights(next(a for a in args if a is not None), f"{op} constant"),
                                   self.shape).reshape(-1).copy()
        name = {"Add": "add", "Sub": "sub" if data_first else "rsub", "Mul": "mul", "Div": "div"}[op]
        if name == "div" and not np.all(constant != 0.0):
            raise UnsupportedNetwork("Div by zero")
        self.input_map.append((name, constant))

    def push(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.steps.append(AffineStep(weight, bias))
        self.size = weight.shape[0]

    def shift(self, constant: np.ndarray, sign: float, what: str) -> None:
        """Add ``sign·constant`` (broadcast to the current tensor) to the bias of the last step when
        it is zero there, else as a step of its own."""
        shift = sign * np.broadcast_to(_as_weights(constant, what), self.shape).reshape(-1)
        if not np.any(shift):
            return
        last = self.steps[-1] if self.steps else None
        if last is not None and last.activation is None and not np.any(last.bias):
            self.steps[-1] = AffineStep(last.weight, last.bias + shift)
        else:
            self.push(np.eye(self.size), shift)

    def apply(self, node, args: list[np.ndarray | None], attributes: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
        op, out = node.op_type, node.output[0]
        if op in ACTIVATIONS:
            if not self.steps or self.steps[-1].activation is not None:
                self.push(np.eye(self.size), np.zeros(self.size))
            last = self.steps[-1]
            self.steps[-1] = AffineStep(last.weight, last.bias, op)
        elif op in SHAPE_OPS:
            self.shape = self._reshaped(op, args, attributes)
        elif op in ("MatMul", "Gemm"):
            self._linear(op, args, attributes)
        elif op in ("Add", "Sub", "Mul", "Div") and not self.steps:
            self.map_input(op, args)
        elif op in ("Add", "Sub"):
            constant = next(a for a in args if a is not None)
            if op == "Sub" and args[0] is not None:  # c - x
                self.push(-np.eye(self.size), np.zeros(self.size))
                self.shift(constant, 1.0, f"{op} constant")
            else:
                self.shift(constant, -1.0 if op == "Sub" else 1.0, f"{op} constant")
        elif op in ("Mul", "Div"):
            constant = _as_weights(next(a for a in args if a is not None), f"{op} constant")
            if op == "Div" and not np.all([_exact_power_of_two(float(v)) for v in constant.reshape(-1)]):
                raise UnsupportedNetwork("Div by a constant that is not a power of two (inexact reciprocal)")
            scale = np.broadcast_to(1.0 / constant if op == "Div" else constant,
                                    self.shape).reshape(-1)
            if not np.all(np.isfinite(scale)):
                raise UnsupportedNetwork("Div by a constant whose reciprocal overflows")
            if np.any(scale != 1.0):  # a scaling by one is no step
                self.push(np.diag(scale), np.zeros(self.size))
        self.name = out

    def _reshaped(self, op: str, args: list[np.ndarray | None], attributes: dict[str, object]) -> list[int]:
        if op == "Identity":
            return self.shape
        if op == "Flatten":
            axis = int(attributes.get("axis", 1))  # type: ignore[call-overload]
            axis = axis + len(self.shape) if axis < 0 else axis
            return [int(np.prod(self.shape[:axis])), int(np.prod(self.shape[axis:]))]
        target = [int(v) for v in np.asarray(args[1]).reshape(-1)]
        target = [self.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = self.size // max(known, 1)
        if int(np.prod(target)) != self.size:
            raise UnsupportedNetwork(f"Reshape to {target} does not fit {self.size} values")
        return target

    def _linear(self, op: str, args: list[np.ndarray | None], attributes: dict[str, object]) -> None:
        if args[0] is not None or args[1] is None:
            raise UnsupportedNetwork(f"{op} must multiply the data by a constant weight on the right")
        if int(np.prod(self.shape[:-1])) != 1:
            raise UnsupportedNetwork(f"{op} on a tensor of shape {self.shape} (batch 1, one row expected)")
        weight = _as_weights(args[1], f"{op} weight")
        if op == "Gemm":
            if attributes.get("transA", 0):
                raise UnsupportedNetwork("Gemm with transA")
            weight = weight.T if attributes.get("transB", 0) else weight
        if weight.ndim != 2 or weight.shape[0] != self.shape[-1]:
            raise UnsupportedNetwork(f"{op} weight of shape {list(weight.shape)} on {self.shape[-1]} values")
        alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))  # type: ignore[arg-type]
        if alpha != 1.0 and not _exact_power_of_two(alpha):
            raise UnsupportedNetwork(f"Gemm alpha {alpha} is not a power of two (inexact scaling)")
        self.push(_scaled(weight.T, alpha), np.zeros(weight.shape[1]))
        self.shape = [*self.shape[:-1], weight.shape[1]]
        if op == "Gemm" and len(args) > 2 and args[2] is not None and beta != 0.0:
            if beta != 1.0 and not _exact_power_of_two(beta):
                raise UnsupportedNetwork(f"Gemm beta {beta} is not a power of two (inexact scaling)")
            self.shift(_scaled(_as_weights(args[2], "Gemm bias"), beta), 1.0, "Gemm bias")
