"""The DARTS-style cell that relaxes a block, its search and the network around it.

The cell has two states after its input ``s0``: ``s1 = first(s0)`` and the output
``s2 = skip(s0) + last(s1)``. Each edge is a mixture of candidate operations weighted by the
softmax of its architecture logits; the first edge holds the original block's layer (weights
copied) among the candidates, and the logits start so that the cell is close to the original
block (`ArchRepairSettings.warm_logit`: the original layer, no skip, identity on the last edge).
Weight steps (on the training split) and architecture steps (on the held-out split) alternate
(first-order DARTS); `Cell.discrete` then keeps the strongest operation per edge.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from onnx import helper

from ...bounds.build import LINEAR_OPS
from ...errors import UnsupportedError
from ...network import Network
from ...verify import Deadline
from .blocks import Block
from .operations import ConvRelu, DenseRelu, Nodes, Operation, operation
from .settings import ArchRepairSettings

Tensor = torch.Tensor
ORIGINAL = "original"
# Largest relative difference between the original block and its warm-started copy on random
# inputs: both compute the same affine map and Relu in float64, so only rounding separates them.
WARM_START_TOLERANCE = 1e-6


def _block_function(network: Network, block: Block, nodes: int) -> Callable[[Tensor], Tensor]:
    """The first ``nodes`` nodes of the block as a function of its source (float64)."""
    constants = network.constants_as(torch.float64, torch.device("cpu"))

    def run(x: Tensor) -> Tensor:
        values = network.run_nodes(block.nodes(network)[:nodes], {**constants, block.source: x})
        return values[block.nodes(network)[nodes - 1].outputs[0]]

    return run


def original_operation(network: Network, block: Block) -> Operation:
    """The block as a candidate operation with its own weights: a dense block made of linear nodes
    and one final Relu becomes a `DenseRelu` of the same affine map; a Conv (square kernel, equal
    strides, padding the same on both sides) and Relu a `ConvRelu` of the same geometry. Other
    blocks cannot be searched yet."""
    nodes = block.nodes(network)
    reason = "its nodes are not one linear map and a final Relu"
    if block.kind == "dense" and all(n.op_type in LINEAR_OPS for n in nodes[:-1]):
        affine = _block_function(network, block, len(nodes) - 1)
        n = block.in_shape[0]
        with torch.no_grad():
            points = torch.cat([torch.zeros(1, n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)])
            images = affine(points).reshape(n + 1, -1)
        candidate = DenseRelu(n, block.out_shape[0]).double()
        with torch.no_grad():
            candidate.layers[0].bias.copy_(images[0])
            candidate.layers[0].weight.copy_((images[1:] - images[0]).T)
        return _checked(candidate.float(), _block_function(network, block, len(nodes)), block, network)
    if block.kind == "conv" and [n.op_type for n in nodes] == ["Conv", "Relu"]:
        conv = nodes[0]
        kernel = list(network.constants[conv.inputs[1]].shape[2:])
        attrs = conv.attributes
        strides = list(attrs.get("strides", [1, 1]))
        pads = list(attrs.get("pads", [0] * 4))
        fits = (len(kernel) == 2 and kernel[0] == kernel[1] and int(attrs.get("group", 1)) == 1
                and strides[0] == strides[1] and list(attrs.get("dilations", [1, 1])) == [1, 1]
                and pads[:2] == pads[2:] and attrs.get("auto_pad", "NOTSET") == "NOTSET")
        if fits:
            candidate = ConvRelu(block.in_shape[0], block.out_shape[0], kernel[0], strides[0], (pads[0], pads[1]))
            with torch.no_grad():
                candidate.conv.weight.copy_(network.constants[conv.inputs[1]])
                if len(conv.inputs) > 2 and conv.inputs[2]:
                    candidate.conv.bias.copy_(network.constants[conv.inputs[2]])
                else:
                    candidate.conv.bias.zero_()
            return _checked(candidate, _block_function(network, block, len(nodes)), block, network)
        reason = "its convolution is not one square kernel, ungrouped and undilated, with equal strides and padding the same on both sides"
    raise UnsupportedError(network.path, "network", f"ArchRepair cannot search block {block.describe(network)} yet: {reason}")


def _checked(candidate: Operation, block_function: Callable[[Tensor], Tensor], block: Block, network: Network) -> Operation:
    x = torch.rand((8,) + block.in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = block_function(x)
        got = candidate.double()(x)
    candidate.float()
    if float((got - expected).abs().max()) > WARM_START_TOLERANCE * max(1.0, float(expected.abs().max())):
        raise UnsupportedError(network.path, "network", f"block {block.describe(network)} is not reproduced by its warm start")
    return candidate


class MixedEdge(torch.nn.Module):
    """A softmax-weighted mixture of candidate operations."""

    def __init__(self, candidates: dict[str, Operation], warm: str, warm_logit: float) -> None:
        super().__init__()
        self.names = list(candidates)
        self.candidates = torch.nn.ModuleList(candidates.values())
        start = torch.tensor([warm_logit if name == warm else 0.0 for name in self.names])
        self.logits = torch.nn.Parameter(start)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.logits, dim=0)
        return sum(w * op(x) for w, op in zip(weights, self.candidates))  # type: ignore[return-value]

    def strongest(self, allow_zero: bool = True) -> tuple[str, Operation]:
        order = torch.argsort(self.logits.detach(), descending=True).tolist()
        k = next(k for k in order if allow_zero or self.names[k] != "zero")
        return self.names[k], self.candidates[k]


def edge_candidates(names: tuple[str, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> dict[str, Operation]:
    built = {name: operation(name, in_shape, out_shape) for name in names}
    return {name: op for name, op in built.items() if op is not None}


class Cell(torch.nn.Module):
    def __init__(self, original: Operation, block: Block, settings: ArchRepairSettings) -> None:
        super().__init__()
        names = settings.dense_operations if block.kind == "dense" else settings.conv_operations
        first = {ORIGINAL: original, **edge_candidates(tuple(n for n in names if n != "zero"), block.in_shape, block.out_shape)}
        self.first = MixedEdge(first, ORIGINAL, settings.warm_logit)
        self.skip = MixedEdge(edge_candidates(names, block.in_shape, block.out_shape), "zero", settings.warm_logit)
        self.last = MixedEdge(edge_candidates(names, block.out_shape, block.out_shape), "identity", settings.warm_logit)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.last(self.first(x))

    def architecture(self) -> list[torch.nn.Parameter]:
        return [self.first.logits, self.skip.logits, self.last.logits]

    def weights(self) -> list[torch.nn.Parameter]:
        return [p for edge in (self.first, self.skip, self.last) for p in edge.candidates.parameters()]

    def discrete(self) -> DiscreteCell:
        """The strongest operation per edge (the first edge never zero); a cell whose last edge
        is zero is its skip edge alone, and one whose skip is zero too keeps the last edge's
        strongest other operation."""
        skip, last = self.skip.strongest(), self.last.strongest()
        if skip[0] == "zero" and last[0] == "zero":
            last = self.last.strongest(allow_zero=False)
        return DiscreteCell(self.first.strongest(allow_zero=False), skip, last)


class DiscreteCell(torch.nn.Module):
    """One operation per edge; a zero edge is absent."""

    def __init__(self, first: tuple[str, Operation], skip: tuple[str, Operation], last: tuple[str, Operation]) -> None:
        super().__init__()
        if first[0] == "zero" or (skip[0] == "zero" and last[0] == "zero"):
            raise ValueError("a cell needs a non-zero first edge and a non-zero skip or last edge")
        self.choice = {"first": first[0], "skip": skip[0], "last": last[0]}
        self.first, self.skip, self.last = first[1], skip[1], last[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.choice["last"] == "zero":
            return self.skip(x)
        out = self.last(self.first(x))
        return out if self.choice["skip"] == "zero" else out + self.skip(x)

    def onnx_nodes(self, prefix: str, source: str, target: str) -> Nodes:
        """The cell as ONNX nodes from ``source`` to ``target`` (skip edges join with an Add)."""
        parts: list[Nodes] = []
        if self.choice["last"] == "zero":
            return self.skip.onnx_nodes(f"{prefix}skip/", source, target)
        through = target if self.choice["skip"] == "zero" else f"{prefix}last"
        parts.append(self.first.onnx_nodes(f"{prefix}first/", source, f"{prefix}s1"))
        parts.append(self.last.onnx_nodes(f"{prefix}last/", f"{prefix}s1", through))
        if self.choice["skip"] != "zero":
            parts.append(self.skip.onnx_nodes(f"{prefix}skip/", source, f"{prefix}skip"))
            parts.append(([helper.make_node("Add", [f"{prefix}skip", through], [target], name=f"{prefix}add")], []))
        return [n for nodes, _ in parts for n in nodes], [i for _, inits in parts for i in inits]

    def parameter_count(self) -> int:
        return int(sum(p.numel() for name in ("first", "skip", "last") if self.choice[name] != "zero"
                       for p in getattr(self, name).parameters()))


class SearchedNetwork(torch.nn.Module):
    """The imported network with ``block`` replaced by ``cell``: flat inputs → flat outputs (float32)."""

    def __init__(self, network: Network, block: Block, cell: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.block, self.cell = network, block, cell
        self.constants = network.constants_as(torch.float32, torch.device("cpu"))

    def sources(self, x: Tensor) -> Tensor:
        """The block's input on flat inputs ``x``."""
        values = {**self.constants, self.network.input_name: x.reshape((x.shape[0],) + tuple(self.network.input_shape[1:]))}
        return self.network.run_nodes(self.network.nodes[:self.block.start], values)[self.block.source]

    def from_sources(self, s: Tensor) -> Tensor:
        values = {**self.constants, self.block.target: self.cell(s)}
        out = self.network.run_nodes(self.network.nodes[self.block.end:], values)[self.network.output_name]
        return out.reshape(s.shape[0], self.network.n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.from_sources(self.sources(x))


def search(model: SearchedNetwork, loss: Callable[[SearchedNetwork, str, torch.Generator], Tensor],
           settings: ArchRepairSettings, deadline: Deadline) -> dict[str, dict[str, float]]:
    """Alternate weight steps (``loss(model, "train", ...)``) and architecture steps (``"held_out"``)
    on ``model.cell`` (a `Cell`); returns the final softmax weight of each operation per edge."""
    cell = model.cell
    assert isinstance(cell, Cell)
    weights = torch.optim.Adam(cell.weights(), lr=settings.weight_rate)
    architecture = torch.optim.Adam(cell.architecture(), lr=settings.architecture_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    for _ in range(settings.search_steps):
        if deadline.expired():
            break
        for optimiser, split in ((weights, "train"), (architecture, "held_out")):
            weights.zero_grad()
            architecture.zero_grad()
            loss(model, split, generator).backward()
            optimiser.step()
    return {name: dict(zip(getattr(cell, name).names, np.round(torch.softmax(getattr(cell, name).logits.detach(), 0).double().numpy(), 3).tolist()))
            for name in ("first", "skip", "last")}
