"""The candidate operations of the search cell: each a torch module with its ONNX nodes.

Every operation is written with ONNX operators the bound graph bounds (`verirepair.bounds.build`:
its linear operators and Relu), so whatever the search keeps can be verified; `check_operations`
refuses a name outside `OPERATIONS` in one line. An operation maps a value of shape ``in_shape``
(per sample) to one of ``out_shape``; identity and average pooling only where the two agree.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ...bounds.build import LINEAR_OPS
from ...errors import SettingsError

Tensor = torch.Tensor
Nodes = tuple[list[onnx.NodeProto], list[onnx.TensorProto]]
Shape = tuple[int, ...]

BOUNDED_OPS = LINEAR_OPS | {"Relu"}
"""ONNX operators an exported cell may use: those `build_graph` turns into bound operators."""


def _initializer(name: str, value: Tensor) -> onnx.TensorProto:
    return numpy_helper.from_array(value.detach().cpu().numpy().astype(np.float32), name)


class Operation(torch.nn.Module, abc.ABC):
    """One candidate: ``forward`` on [B, *in_shape], ``onnx_nodes`` writing the same function
    from ``source`` to ``target`` (new value and initializer names start with ``prefix``)."""

    onnx_ops: frozenset[str] = frozenset()

    @abc.abstractmethod
    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        """The nodes and initializers computing ``forward`` from ``source`` into ``target``."""


class Zero(Operation):
    """No edge: its share of the mixture is nothing; the exported cell drops the edge."""

    def __init__(self, out_shape: Shape) -> None:
        super().__init__()
        self.out_shape = out_shape

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros((x.shape[0],) + self.out_shape)

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        return [], []


class Identity(Operation):
    onnx_ops = frozenset({"Identity"})

    def forward(self, x: Tensor) -> Tensor:
        return x

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        return [helper.make_node("Identity", [source], [target], name=f"{prefix}identity")], []


class DenseRelu(Operation):
    """``relu(W·x + b)``, or with ``hidden`` > 0 two such layers through ``hidden`` neurons."""

    onnx_ops = frozenset({"Gemm", "Relu"})

    def __init__(self, inputs: int, outputs: int, hidden: int = 0) -> None:
        super().__init__()
        widths = [inputs, hidden, outputs] if hidden else [inputs, outputs]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        nodes, initializers = [], []
        for k, layer in enumerate(self.layers):
            name = f"{prefix}dense{k}"
            out = target if k == len(self.layers) - 1 else f"{name}_relu"
            initializers += [_initializer(f"{name}_weight", layer.weight), _initializer(f"{name}_bias", layer.bias)]
            nodes += [helper.make_node("Gemm", [source, f"{name}_weight", f"{name}_bias"], [f"{name}_linear"], name=name, transB=1),
                      helper.make_node("Relu", [f"{name}_linear"], [out], name=f"{name}_relu")]
            source = out
        return nodes, initializers


class ConvRelu(Operation):
    """``relu(conv(x) + b)`` with a square k×k kernel; stride 1 and padding keeping the height
    and width unless given (the padding the same on both sides of each axis)."""

    onnx_ops = frozenset({"Conv", "Relu"})

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int = 1, padding: tuple[int, int] | None = None) -> None:
        super().__init__()
        pad = (kernel // 2, kernel // 2) if padding is None else padding
        self.conv = torch.nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        k, (pad_h, pad_w), (stride_h, stride_w) = self.conv.kernel_size[0], self.conv.padding, self.conv.stride
        name = f"{prefix}conv{k}"
        initializers = [_initializer(f"{name}_weight", self.conv.weight), _initializer(f"{name}_bias", self.conv.bias)]
        nodes = [helper.make_node("Conv", [source, f"{name}_weight", f"{name}_bias"], [f"{name}_linear"], name=name,
                                  kernel_shape=[k, k], pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w]),
                 helper.make_node("Relu", [f"{name}_linear"], [target], name=f"{name}_relu")]
        return nodes, initializers


class AveragePool(Operation):
    """3×3 average, stride 1, zero padding 1 counted in the average (torch's default)."""

    onnx_ops = frozenset({"AveragePool"})

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        return [helper.make_node("AveragePool", [source], [target], name=f"{prefix}avgpool", kernel_shape=[3, 3],
                                 pads=[1, 1, 1, 1], strides=[1, 1], count_include_pad=1)], []


class Chain(Operation):
    """``second(first(x))``: two operations through an intermediate value."""

    def __init__(self, first: Operation, second: Operation) -> None:
        super().__init__()
        self.first, self.second = first, second
        self.onnx_ops = first.onnx_ops | second.onnx_ops

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        first_nodes, first_inits = self.first.onnx_nodes(f"{prefix}0/", source, f"{prefix}wide")
        second_nodes, second_inits = self.second.onnx_nodes(f"{prefix}1/", f"{prefix}wide", target)
        return first_nodes + second_nodes, first_inits + second_inits


def widened(original: DenseRelu | ConvRelu, factor: int, generator: torch.Generator) -> Chain:
    """``original`` with ``factor`` times its outputs, then a layer back to its width (dense, or
    a 1×1 convolution), each with a Relu; it computes what ``original`` computes: the first
    outputs are the original's, the new ones start at random (torch's default scale), and the
    second layer passes the original outputs through (identity weights, zero bias; a Relu of a
    Relu's output is that output) and reads the new ones with zero weights, so training moves
    them into the block from there."""
    if isinstance(original, DenseRelu):
        if len(original.layers) != 1:
            raise ValueError("only a one-layer operation can be widened")
        layer = original.layers[0]
        outputs = layer.out_features
        wide: DenseRelu | ConvRelu = DenseRelu(layer.in_features, factor * outputs)
        narrow: DenseRelu | ConvRelu = DenseRelu(factor * outputs, outputs)
        old, new, back = layer, wide.layers[0], narrow.layers[0]
    else:
        conv = original.conv
        outputs = conv.out_channels
        wide = ConvRelu(conv.in_channels, factor * outputs, conv.kernel_size[0], conv.stride[0], tuple(conv.padding))  # type: ignore[arg-type]
        narrow = ConvRelu(factor * outputs, outputs, 1)
        old, new, back = conv, wide.conv, narrow.conv
    with torch.no_grad():
        new.weight.copy_(torch.cat([old.weight, _fresh(new.weight[outputs:], generator)]))
        new.bias[:outputs].copy_(old.bias)
        new.bias[outputs:].zero_()
        back.weight.zero_()
        back.weight[:, :outputs].copy_(torch.eye(outputs).reshape(back.weight[:, :outputs].shape))
        back.bias.zero_()
    return Chain(wide, narrow)


def _fresh(like: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform weights of ``like``'s shape at torch's default scale for its fan-in."""
    bound = 1.0 / float(np.sqrt(like[0].numel()))
    return (torch.rand(like.shape, generator=generator) * 2 - 1) * bound


def _same_shape(make: Callable[[], Operation]) -> Callable[[Shape, Shape], Operation | None]:
    return lambda a, b: make() if a == b else None


OPERATIONS: dict[str, tuple[str, Callable[[Shape, Shape], Operation | None], frozenset[str]]] = {
    "zero": ("both", lambda a, b: Zero(b), Zero.onnx_ops),
    "identity": ("both", _same_shape(Identity), Identity.onnx_ops),
    "dense_relu": ("dense", lambda a, b: DenseRelu(a[0], b[0]), DenseRelu.onnx_ops),
    "dense_relu_wide": ("dense", lambda a, b: DenseRelu(a[0], b[0], hidden=2 * b[0]), DenseRelu.onnx_ops),
    "conv3x3_relu": ("conv", lambda a, b: ConvRelu(a[0], b[0], 3) if a[1:] == b[1:] else None, ConvRelu.onnx_ops),
    "conv1x1_relu": ("conv", lambda a, b: ConvRelu(a[0], b[0], 1) if a[1:] == b[1:] else None, ConvRelu.onnx_ops),
    "avgpool3x3": ("conv", _same_shape(AveragePool), AveragePool.onnx_ops),
}
"""name → (block kind it fits: dense, conv or both; factory from (in_shape, out_shape), None
where the shapes do not fit it; the ONNX operators it exports)."""


def check_operations(names: tuple[str, ...], kind: str) -> None:
    """Refuse candidate names that are unknown, do not fit ``kind`` blocks, or would export an
    operator the bound graph cannot bound."""
    for name in names:
        if name not in OPERATIONS:
            fitting = sorted(n for n, (k, _, _) in OPERATIONS.items() if k in (kind, "both"))
            raise SettingsError(f"candidate operation {name!r} for {kind} blocks is not one the bound graph supports "
                                f"(supported: {', '.join(fitting)})")
        fits, _, ops = OPERATIONS[name]
        if fits not in (kind, "both"):
            raise SettingsError(f"candidate operation {name!r} does not fit {kind} blocks")
        if not ops <= BOUNDED_OPS:
            raise SettingsError(f"candidate operation {name!r} exports {sorted(ops - BOUNDED_OPS)}, which the bound graph cannot bound")


def operation(name: str, in_shape: Shape, out_shape: Shape) -> Operation | None:
    """The candidate ``name`` from ``in_shape`` to ``out_shape`` (None where the shapes do not fit it)."""
    return OPERATIONS[name][1](in_shape, out_shape)
