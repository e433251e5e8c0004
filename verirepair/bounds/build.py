"""Build the `BoundGraph` of an imported network: one bound operator per input-dependent node.

Linear nodes keep their ONNX operation (a convolution stays a convolution); what the bound engine
needs to know about each is which constant operands are coefficients, which are offsets and which
are structure (`ROLES`). LeakyRelu and Clip are written as ReLUs with linear nodes around them
(``leaky(x) = a·x + (1 - a)·relu(x)``, ``clip(x) = lo + relu(x - lo) - relu(x - hi)``), so every
search that handles ReLUs handles them. Every node the engine cannot bound is listed in one error.
The built graph is checked against the imported network on random points before it is used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..network import Network, Node
from .graph import BoundGraph, GraphNode, Operator
from .linear import (
    Convolution,
    Dense,
    LinearOperator,
    Role,
    convolution_operation,
    dense,
)
from .operators import BoundMaxPool, BoundRelu, BoundSShaped

Tensor = torch.Tensor

ELEMENTWISE_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "BatchNormalization"}
"""Operators that, on one input-dependent operand and keeping its shape, scale each element alone."""
SHAPE_OPS = {"Identity", "Dropout", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
"""Operators whose output is their operand's values in the same order."""
COPY_OPS = {"Identity", "Dropout", "Cast", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice",
            "Split", "Concat", "Pad", "Gather"}
"""Operators whose every output element is one input element or a constant."""
LINEAR_OPS = COPY_OPS | {"Gemm", "MatMul", "Conv", "ConvTranspose", "BatchNormalization", "Add", "Sub", "Mul", "Div",
                         "Neg", "AveragePool", "GlobalAveragePool"}
ROLES: dict[str, dict[int, Role]] = {
    "Gemm": {1: "weight", 2: "offset"},
    "MatMul": {0: "weight", 1: "weight"},
    "Conv": {1: "weight", 2: "offset"},
    "ConvTranspose": {1: "weight", 2: "offset"},
    "BatchNormalization": {1: "weight", 2: "offset", 3: "offset", 4: "keep"},
    "Add": {0: "offset", 1: "offset"},
    "Sub": {0: "offset", 1: "offset"},
    "Mul": {0: "weight", 1: "weight"},
    "Div": {1: "weight"},
    "Concat": {i: "offset" for i in range(64)},
    "Pad": {2: "offset"},
}
"""Constant operands that are coefficients or offsets, per operator; any other is structure."""
# Relative agreement required between the built graph and the imported network on random points:
# both evaluate the same operations in float64, so they differ by rounding only (~1e-13).
BUILD_CHECK_TOLERANCE = 1e-8


class _Builder:
    def __init__(self, network: Network) -> None:
        self.network = network
        self.constants = network.constants_as(torch.float64, torch.device("cpu"))
        shape = tuple(network.input_shape[1:])
        self.probe: dict[str, Tensor] = {network.input_name: torch.zeros((1,) + shape, dtype=torch.float64)}
        self.nodes: list[GraphNode] = []
        self.unsupported: list[str] = []
        self.uses = Counter(name for node in network.nodes for name in node.inputs)
        self.used = set(self.uses) | {network.output_name}

    def shape(self, value: str) -> tuple[int, ...]:
        return tuple(self.probe[value].shape[1:])

    def add(self, name: str, op: Operator, inputs: tuple[str, ...], output: str) -> str:
        node = GraphNode(name, op, inputs, output)
        if isinstance(op, LinearOperator):
            self.probe[output] = op.forward(*[self.probe[v] for v in inputs])
        else:
            flat = op.forward(self.probe[inputs[0]].reshape(1, -1))
            self.probe[output] = flat.reshape(self._nonlinear_shape(op, inputs[0]))
        self.nodes.append(node)
        return output

    def _nonlinear_shape(self, op: Operator, value: str) -> tuple[int, ...]:
        return self._pool_shape if isinstance(op, BoundMaxPool) else tuple(self.probe[value].shape)

    def linear(self, name: str, op_type: str, operation: Callable[..., Tensor], operands: list[str | Tensor | None],
               output: str, roles: dict[int, Role] | None = None, copy: bool = False,
               signs: dict[int, int] | None = None, shape_only: bool = False, elementwise: bool = False) -> str:
        """A `LinearOperator` over ``operands``: value names (dynamic) or constant tensors."""
        dynamic = tuple(i for i, o in enumerate(operands) if isinstance(o, str))
        constants = {i: o for i, o in enumerate(operands) if isinstance(o, Tensor)}
        roles = roles or {}
        if not self._keeps_batch(operation, operands):
            self.unsupported.append(f"{name} ({op_type} across the batch axis)")
            self.probe[output] = operation(*[self.probe[o] if isinstance(o, str) else o for o in operands])
            return output
        input_shapes = tuple(self.shape(operands[i]) for i in dynamic)  # type: ignore[arg-type]
        output_shape = self._output_shape(operation, operands)
        single = len(dynamic) == 1
        op = LinearOperator(op_type, operation, len(operands), dynamic, constants,
                            {i: roles.get(i, "keep") for i in constants},
                            tuple((signs or {}).get(i, 1) for i in dynamic), input_shapes, output_shape, copy=copy,
                            shape_only=shape_only and single,
                            elementwise=elementwise and single and input_shapes[0] == output_shape)
        return self.add(name, op, tuple(operands[i] for i in dynamic), output)  # type: ignore[misc]

    def _keeps_batch(self, operation: Callable[..., Tensor], operands: list[str | Tensor | None]) -> bool:
        """Whether the node maps each sample on its own: on two samples it gives two results."""
        args = [torch.cat([self.probe[o], self.probe[o] + 1.0]) if isinstance(o, str) else o for o in operands]
        try:
            both = operation(*args)
        except RuntimeError:
            return False
        return both.shape[0] == 2 and tuple(both.shape[1:]) == self._output_shape(operation, operands)

    def _output_shape(self, operation: Callable[..., Tensor], operands: list[str | Tensor | None]) -> tuple[int, ...]:
        args = [self.probe[o] if isinstance(o, str) else o for o in operands]
        return tuple(operation(*args).shape[1:])

    def operand(self, name: str) -> str | Tensor | None:
        if not name:
            return None
        if name in self.probe:
            return name
        return self.constants[name]

    def convert(self, node: Node) -> None:
        operands = [self.operand(name) for name in node.inputs]
        dynamic = [i for i, o in enumerate(operands) if isinstance(o, str)]
        op_type = node.op_type
        output = node.outputs[0]
        if op_type == "Relu":
            self.add(node.name, BoundRelu(), (node.inputs[0],), output)
        elif op_type in ("Sigmoid", "Tanh"):
            self.add(node.name, BoundSShaped(op_type.lower()), (node.inputs[0],), output)
        elif op_type == "MaxPool":
            self._max_pool(node)
        elif op_type == "LeakyRelu":
            self._leaky_relu(node, float(node.attributes.get("alpha", 0.01)))
        elif op_type == "Clip":
            self._clip(node, operands)
        elif op_type not in LINEAR_OPS:
            self.unsupported.append(f"{node.name} ({op_type})")
        elif op_type in ("Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "BatchNormalization") and (
                dynamic != [0] and not (op_type in ("Mul", "MatMul") and len(dynamic) == 1)):
            self.unsupported.append(f"{node.name} ({op_type} of input-dependent coefficients)")
        elif op_type == "Gemm":
            self._gemm(node, operands)
        elif op_type == "Add" and self._folds_into_dense(node, operands):
            pass
        elif op_type == "MatMul" and dynamic == [0] and operands[1].dim() == 2:  # type: ignore[union-attr]
            weight = operands[1]
            assert isinstance(weight, Tensor)
            self.add(node.name, dense(weight.T.contiguous(), None, self.shape(node.inputs[0]), "MatMul"),
                     (node.inputs[0],), output)
        elif op_type == "Conv" and len(self.shape(node.inputs[0])) in (2, 3):
            self._conv(node, operands)
        else:
            for index, name in enumerate(node.outputs):
                if name in self.used:
                    operation = node.operation if len(node.outputs) == 1 else _output_of(node.operation, index)
                    self.linear(node.name, op_type, operation, operands, name, ROLES.get(op_type),
                                copy=op_type in COPY_OPS, signs=_signs(op_type, dynamic),
                                shape_only=op_type in SHAPE_OPS, elementwise=op_type in ELEMENTWISE_OPS)

    def _folds_into_dense(self, node: Node, operands: list[str | Tensor | None]) -> bool:
        """A MatMul's output read only by this Add of a constant row becomes that MatMul's bias
        (the Gemm it stands for): one backward step instead of two."""
        dynamic = [o for o in operands if isinstance(o, str)]
        constant = next((o for o in operands if isinstance(o, Tensor)), None)
        if len(dynamic) != 1 or constant is None or not self.nodes or self.nodes[-1].output != dynamic[0]:
            return False
        last = self.nodes[-1]
        if not isinstance(last.op, Dense) or last.op.has_bias or self.uses[dynamic[0]] != 1:
            return False
        n_out = int(last.op.weight.shape[0])
        if constant.numel() not in (1, n_out) or any(size != 1 for size in constant.shape[:-1]):
            return False
        self.nodes.pop()
        bias = constant.reshape(-1).broadcast_to((n_out,)).clone()
        self.add(node.name, dense(last.op.weight, bias, last.op.input_shapes[0], "Gemm"), last.inputs, node.outputs[0])
        return True

    def _gemm(self, node: Node, operands: list[str | Tensor | None]) -> None:
        attrs = node.attributes
        weight, bias = operands[1], operands[2] if len(operands) > 2 else None
        assert isinstance(weight, Tensor)
        if int(attrs.get("transA", 0)) or len(self.shape(node.inputs[0])) != 1:
            self.unsupported.append(f"{node.name} (Gemm with a transposed or non-matrix input)")
            return
        matrix = float(attrs.get("alpha", 1.0)) * (weight if int(attrs.get("transB", 0)) else weight.T)
        n_out = int(matrix.shape[0])
        offset = None if bias is None else (float(attrs.get("beta", 1.0)) * bias).broadcast_to((1, n_out)).reshape(-1)
        self.add(node.name, dense(matrix.contiguous(), offset, self.shape(node.inputs[0])), (node.inputs[0],),
                 node.outputs[0])

    def _conv(self, node: Node, operands: list[str | Tensor | None]) -> None:
        attrs = node.attributes
        weight = operands[1]
        assert isinstance(weight, Tensor)
        rank = weight.dim() - 2
        strides = tuple(attrs.get("strides", [1] * rank))
        pads = tuple(attrs.get("pads", [0] * (2 * rank)))
        dilations = tuple(attrs.get("dilations", [1] * rank))
        group = int(attrs.get("group", 1))
        constants = {1: weight} if len(operands) < 3 or operands[2] is None else {1: weight, 2: operands[2]}
        operation = convolution_operation(pads, strides, dilations, group)
        shape = self.shape(node.inputs[0])
        op = Convolution("Conv", operation, 3, (0,), constants,  # type: ignore[arg-type]
                         {p: ROLES["Conv"][p] for p in constants}, (1,), (shape,),
                         self._output_shape(operation, [node.inputs[0], *constants.values()]),
                         pads=pads, strides=strides, dilations=dilations, group=group)
        self.add(node.name, op, (node.inputs[0],), node.outputs[0])

    def _max_pool(self, node: Node) -> None:
        shape = self.shape(node.inputs[0])
        kernel = list(node.attributes["kernel_shape"])
        strides = list(node.attributes.get("strides", [1] * len(kernel)))
        if len(shape) != 3:
            self.unsupported.append(f"{node.name} (MaxPool over a non-2-D input)")
            return
        n_in = shape[0] * shape[1] * shape[2]
        index = torch.arange(n_in, dtype=torch.float64).reshape(shape[0], 1, shape[1], shape[2])
        patches = F.unfold(index, kernel, stride=strides)  # [C, k, L]
        windows = patches.permute(0, 2, 1).reshape(-1, patches.shape[1]).round().long()
        out_h = (shape[1] - kernel[0]) // strides[0] + 1
        out_w = (shape[2] - kernel[1]) // strides[1] + 1
        self._pool_shape = (1, shape[0], out_h, out_w)
        self.add(node.name, BoundMaxPool(windows, n_in), (node.inputs[0],), node.outputs[0])

    def _leaky_relu(self, node: Node, slope: float) -> None:
        x, out = node.inputs[0], node.outputs[0]
        a = torch.tensor(slope, dtype=torch.float64)
        scaled = self.linear(node.name, "Mul", torch.mul, [x, a], f"{out}#scaled", {1: "weight"})
        relu = self.add(node.name, BoundRelu(), (x,), f"{out}#relu")
        self.linear(node.name, "Add", _weighted_sum, [relu, scaled, 1.0 - a], out, {2: "weight"})

    def _clip(self, node: Node, operands: list[str | Tensor | None]) -> None:
        x, out = node.inputs[0], node.outputs[0]
        low, high = _clip_limits(node, operands)
        if low is None and high is None:
            self.linear(node.name, "Identity", _first, [x], out, copy=True)
        elif high is None:
            shifted = self.linear(node.name, "Sub", torch.sub, [x, low], f"{out}#shifted", {1: "offset"})
            relu = self.add(node.name, BoundRelu(), (shifted,), f"{out}#relu")
            self.linear(node.name, "Add", torch.add, [relu, low], out, {1: "offset"})
        elif low is None:
            shifted = self.linear(node.name, "Sub", torch.sub, [high, x], f"{out}#shifted", {0: "offset"}, signs={1: -1})
            relu = self.add(node.name, BoundRelu(), (shifted,), f"{out}#relu")
            self.linear(node.name, "Sub", torch.sub, [high, relu], out, {0: "offset"}, signs={1: -1})
        else:
            above_low = self.add(node.name, BoundRelu(), (self.linear(node.name, "Sub", torch.sub, [x, low],
                                                                      f"{out}#low", {1: "offset"}),), f"{out}#relu_low")
            above_high = self.add(node.name, BoundRelu(), (self.linear(node.name, "Sub", torch.sub, [x, high],
                                                                       f"{out}#high", {1: "offset"}),), f"{out}#relu_high")
            self.linear(node.name, "Add", _difference_plus, [above_low, above_high, low], out, {2: "offset"},
                        signs={1: -1})


def _output_of(operation: Callable[..., Any], index: int) -> Callable[..., Tensor]:
    """Output ``index`` of a multi-output node (Split; Dropout, whose converter returns its one used
    output alone)."""
    def output(*args: Tensor) -> Tensor:
        result = operation(*args)
        return result[index] if isinstance(result, tuple) else result

    return output


def _first(x: Tensor) -> Tensor:
    return x


def _weighted_sum(relu: Tensor, scaled: Tensor, factor: Tensor) -> Tensor:
    return relu * factor + scaled


def _difference_plus(a: Tensor, b: Tensor, offset: Tensor) -> Tensor:
    return a - b + offset


def _signs(op_type: str, dynamic: list[int]) -> dict[int, int]:
    if op_type == "Neg" or (op_type == "Sub" and dynamic == [1]):
        return {1: -1} if op_type == "Sub" else {0: -1}
    return {1: -1} if op_type == "Sub" and dynamic == [0, 1] else {}


def _clip_limits(node: Node, operands: list[str | Tensor | None]) -> tuple[Tensor | None, Tensor | None]:
    limits: list[Tensor | None] = []
    for position, attribute in ((1, "min"), (2, "max")):
        value = operands[position] if len(operands) > position else None
        if value is None and attribute in node.attributes:
            value = torch.tensor(float(node.attributes[attribute]), dtype=torch.float64)
        limits.append(value if isinstance(value, Tensor) else None)
    return limits[0], limits[1]


def build_graph(network: Network) -> BoundGraph:
    """The `BoundGraph` of ``network`` (exact: no relaxation happens here)."""
    builder = _Builder(network)
    for node in network.nodes:
        if any(isinstance(builder.operand(name), str) for name in node.inputs):
            builder.convert(node)
        else:
            builder.unsupported.append(f"{node.name} ({node.op_type}: no input-dependent operand)")
        missing = [name for name in node.outputs if name in builder.used and name not in builder.probe]
        if missing:  # an unsupported node: its outputs' shapes, so that the listing goes on
            values = network.run_nodes([node], {**builder.constants, **builder.probe})
            builder.probe.update({name: values[name] for name in missing})
    if builder.unsupported:
        raise UnsupportedError(network.path, "graph", "the bound engine cannot handle nodes "
                               + ", ".join(builder.unsupported))
    shapes = {name: tuple(value.shape[1:]) for name, value in builder.probe.items()}
    graph = BoundGraph(network.input_name, network.output_name, tuple(builder.nodes), shapes)
    _check_against(network, graph)
    return graph


def _check_against(network: Network, graph: BoundGraph) -> None:
    probe = torch.randn(3, graph.n_inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = network.forward(probe)
    error = (graph.forward(probe) - expected).abs().max().item()
    if not error <= BUILD_CHECK_TOLERANCE * (1.0 + expected.abs().max().item()):
        raise UnsupportedError(network.path, "graph", f"the bound graph disagrees with the network by {error:.3g}")
