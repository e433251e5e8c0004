"""Dense sequential networks described layer by layer: the tests' own simple model of an MLP.

The oracles (exact MILP, z3, exact rationals) reason about these layers directly; `Chain.graph`
gives the equivalent `BoundGraph` (one `Dense` node per affine layer) that the engine works on, so
an oracle's view of the network and the engine's are built from the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from verirepair.bounds import (
    BoundGraph,
    BoundMaxPool,
    BoundRelu,
    BoundSShaped,
    GraphNode,
    LinearOperator,
)
from verirepair.bounds.linear import dense


@dataclass(frozen=True)
class AffineLayer:
    """``z = weight @ x + bias`` with ``weight`` of shape [out, in]."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class ActivationLayer:
    """Element-wise activation; ``kind`` is one of ``relu``, ``sigmoid``, ``tanh``."""

    kind: str
    size: int


@dataclass(frozen=True)
class MaxPoolLayer:
    """``y[i] = max(x[windows[i, 0]], …, x[windows[i, k-1]])``; ``windows`` is a LongTensor [out, k]."""

    windows: torch.Tensor
    n_in: int

    @property
    def n_out(self) -> int:
        return int(self.windows.shape[0])


Layer = AffineLayer | ActivationLayer | MaxPoolLayer
ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@dataclass(frozen=True)
class Chain:
    """``A_k ∘ act ∘ … ∘ act ∘ A_0`` over flat float64 vectors (starts and ends with an affine layer)."""

    layers: tuple[Layer, ...]
    source: BoundGraph | None = None  # the graph these layers were read from (`of_graph`)

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in  # type: ignore[union-attr]

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out  # type: ignore[union-attr]

    @cached_property
    def graph(self) -> BoundGraph:
        if self.source is not None:
            return self.source
        nodes, shapes = [], {"v0": (self.n_inputs,)}
        for k, layer in enumerate(self.layers):
            source, target = f"v{k}", f"v{k + 1}"
            if isinstance(layer, AffineLayer):
                op = dense(layer.weight, layer.bias, (layer.n_in,))
                size = layer.n_out
            elif isinstance(layer, MaxPoolLayer):
                op, size = BoundMaxPool(layer.windows, layer.n_in), layer.n_out
            else:
                op, size = (BoundRelu() if layer.kind == "relu" else BoundSShaped(layer.kind)), layer.size
            nodes.append(GraphNode(f"layer{k}", op, (source,), target))
            shapes[target] = (size,)
        return BoundGraph("v0", f"v{len(self.layers)}", tuple(nodes), shapes)

    @staticmethod
    def of_graph(graph: BoundGraph) -> Chain:
        """The dense layers of a graph whose every node reads the previous one's output: runs of
        linear nodes multiplied out (`LinearOperator.matrices`), as an oracle's view of ``graph``."""
        layers: list[Layer] = []
        weight = torch.eye(graph.n_inputs, dtype=torch.float64)
        bias = torch.zeros(graph.n_inputs, dtype=torch.float64)
        for node in graph.nodes:
            if isinstance(node.op, LinearOperator):
                matrix = node.op.matrices()[0].to_dense()
                offset = node.op.bias.reshape(-1) if node.op.has_bias else torch.zeros(matrix.shape[0], dtype=torch.float64)
                weight, bias = matrix @ weight, matrix @ bias + offset
                continue
            layers.append(AffineLayer(weight, bias))
            n = int(weight.shape[0])
            if isinstance(node.op, BoundMaxPool):
                layers.append(MaxPoolLayer(node.op.windows, n))
                n = node.op.n_out
            else:
                layers.append(ActivationLayer("relu" if isinstance(node.op, BoundRelu) else node.op.kind, n))
            weight, bias = torch.eye(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        layers.append(AffineLayer(weight, bias))
        return Chain(tuple(_merged(layers)), graph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation on a batch ``x`` [B, n_inputs], layer by layer (independently of the graph)."""
        for layer in self.layers:
            if isinstance(layer, AffineLayer):
                x = x @ layer.weight.T + layer.bias
            elif isinstance(layer, MaxPoolLayer):
                x = x[:, layer.windows].amax(dim=-1)
            else:
                x = ACTIVATIONS[layer.kind](x)
        return x


def _merged(layers: list[Layer]) -> list[Layer]:
    """Identity affine layers between two non-linear ones dropped (ReLU then MaxPool)."""
    kept: list[Layer] = []
    for k, layer in enumerate(layers):
        between = 0 < k < len(layers) - 1
        if between and isinstance(layer, AffineLayer) and layer.n_in == layer.n_out and not bool(layer.bias.any()) \
                and torch.equal(layer.weight, torch.eye(layer.n_in, dtype=layer.weight.dtype)):
            continue
        kept.append(layer)
    return kept
