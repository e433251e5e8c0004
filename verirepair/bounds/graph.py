"""The bound graph: a network as a DAG of bound operators in topological order.

Every stage that reasons about a network — bounds, MILP, falsification, certificates — works on
this one representation (`build.build_graph` makes it from an imported ONNX network). Values are
named as in the ONNX file; a node reads one or more values and writes one. A chain (MLP) is the
special case in which every node reads the previous node's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from .linear import Convolution, LinearOperator
from .operators import BoundMaxPool, BoundRelu, BoundSShaped, NonlinearOperator

Tensor = torch.Tensor
Operator = LinearOperator | NonlinearOperator


@dataclass(frozen=True)
class GraphNode:
    name: str
    op: Operator
    inputs: tuple[str, ...]  # the input-dependent operands (values of the graph)
    output: str

    @property
    def is_linear(self) -> bool:
        return isinstance(self.op, LinearOperator)


@dataclass(frozen=True)
class BoundGraph:
    """``nodes`` in topological order from the value ``input`` to the value ``output``; ``shapes``
    gives every value's shape without the batch dimension."""

    input: str
    output: str
    nodes: tuple[GraphNode, ...]
    shapes: dict[str, tuple[int, ...]]

    @property
    def n_inputs(self) -> int:
        return math.prod(self.shapes[self.input])

    @property
    def n_outputs(self) -> int:
        return math.prod(self.shapes[self.output])

    @cached_property
    def nonlinear(self) -> tuple[int, ...]:
        """Indices of the non-linear nodes: the order of `LayerBounds.pre_activation`."""
        return tuple(i for i, node in enumerate(self.nodes) if not node.is_linear)

    @cached_property
    def producer(self) -> dict[str, int]:
        return {node.output: i for i, node in enumerate(self.nodes)}

    @cached_property
    def consumers(self) -> dict[str, tuple[int, ...]]:
        found: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for value in dict.fromkeys(node.inputs):
                found.setdefault(value, []).append(i)
        return {value: tuple(indices) for value, indices in found.items()}

    @cached_property
    def after_nonlinear(self) -> frozenset[str]:
        """Values with a non-linear node among their ancestors (the others are affine in the input,
        so interval arithmetic on them is already exact up to rounding)."""
        found: set[str] = set()
        for node in self.nodes:
            if not node.is_linear or any(v in found for v in node.inputs):
                found.add(node.output)
        return frozenset(found)

    def ancestors(self, value: str) -> frozenset[int]:
        """Indices of the nodes ``value`` depends on (its producer included)."""
        found: set[int] = set()
        pending = [value]
        while pending:
            index = self.producer.get(pending.pop())
            if index is not None and index not in found:
                found.add(index)
                pending.extend(self.nodes[index].inputs)
        return frozenset(found)

    @property
    def is_piecewise_linear(self) -> bool:
        return all(node.is_linear or isinstance(node.op, (BoundRelu, BoundMaxPool)) for node in self.nodes)

    @property
    def is_relu_network(self) -> bool:
        """Only linear nodes and ReLUs."""
        return all(node.is_linear or isinstance(node.op, BoundRelu) for node in self.nodes)

    @property
    def is_dense_chain(self) -> bool:
        """Each node reads the one before, and none is a convolution (which the certificate
        checker does not read)."""
        previous = self.input
        for node in self.nodes:
            if node.inputs != (previous,) or isinstance(node.op, Convolution):
                return False
            previous = node.output
        return True

    @property
    def is_relu_mlp(self) -> bool:
        """Linear nodes and ReLUs in a chain: the networks whose ReLU-split proofs the independent
        certificate checker re-checks."""
        return self.is_dense_chain and self.is_relu_network

    @property
    def is_mlp(self) -> bool:
        """Linear nodes, ReLUs, sigmoids and tanhs in a chain: the networks the independent
        certificate checker reads."""
        return self.is_dense_chain and all(node.is_linear or isinstance(node.op, (BoundRelu, BoundSShaped))
                                     for node in self.nodes)

    @property
    def has_relu(self) -> bool:
        return any(isinstance(node.op, BoundRelu) for node in self.nodes)

    @property
    def has_sshaped(self) -> bool:
        return any(isinstance(node.op, BoundSShaped) for node in self.nodes)

    @cached_property
    def activations(self) -> int:
        """How many numbers one evaluation computes (every value's size, the input's included):
        the number of variables of an exact MILP encoding."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def to(self, device: torch.device | str) -> BoundGraph:
        return replace(self, nodes=tuple(replace(node, op=node.op.to(device)) for node in self.nodes))

    def values(self, x: Tensor, relu_negative_slope: float = 0.0) -> dict[str, Tensor]:
        """Every value on a batch ``x`` [B, n_inputs] (shaped [B, *shape]). ``relu_negative_slope``
        > 0 evaluates a *different* function, with leaky ReLUs: a surrogate whose gradient does not
        vanish where every ReLU of a layer is off (counterexample search only)."""
        batch = x.shape[0]
        if batch == 0:  # operators that reshape with -1 cannot infer it from an empty batch
            return {name: value[:0] for name, value in self.values(x.new_zeros((1,) + x.shape[1:]), relu_negative_slope).items()}
        values = {self.input: x.reshape((batch,) + self.shapes[self.input])}
        for node in self.nodes:
            operands = [values[name] for name in node.inputs]
            if isinstance(node.op, LinearOperator):
                values[node.output] = node.op.forward(*operands)
                continue
            flat = operands[0].reshape(batch, math.prod(self.shapes[node.inputs[0]]))
            if isinstance(node.op, BoundRelu) and relu_negative_slope > 0:
                result = torch.nn.functional.leaky_relu(flat, relu_negative_slope)
            else:
                result = node.op.forward(flat)
            values[node.output] = result.reshape((batch,) + self.shapes[node.output])
        return values

    def forward(self, x: Tensor, relu_negative_slope: float = 0.0) -> Tensor:
        """Outputs [B, n_outputs] for flat inputs ``x`` [B, n_inputs]."""
        return self.values(x, relu_negative_slope)[self.output].reshape(x.shape[0], math.prod(self.shapes[self.output]))
