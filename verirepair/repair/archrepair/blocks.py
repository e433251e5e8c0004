"""Blocks of an imported network: runs of nodes between two single-value cuts of the graph.

A *cut* before node ``k`` is the set of values made before it (the network input included) that
node ``k`` or a later one reads, or that is the network output; constants do not count. A block
is a run ``nodes[start:end]`` whose cuts at both ends hold one value each (its ``source`` and
``target``), holding at least one weighted node (Gemm, MatMul, Conv) and ending in a Relu: a
dense–relu pair, a conv–relu pair, a residual block (the skip's value crosses the cuts inside it,
so the whole block is the smallest such run). Runs are the smallest ones, taken in order; leading
reshapes (Flatten, Reshape) stay outside, so a dense block reads a flat value. The last layer
(no Relu after it) is no block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...network import Network, Node

WEIGHTED = ("Gemm", "MatMul", "Conv")
RESHAPES = ("Flatten", "Reshape")


@dataclass(frozen=True)
class Block:
    start: int  # nodes[start:end] of the imported network
    end: int
    source: str  # the one value the block reads
    target: str  # the one value it makes that later nodes read
    in_shape: tuple[int, ...]  # per sample
    out_shape: tuple[int, ...]
    weights: tuple[str, ...]  # the constants its nodes read
    relus: tuple[str, ...]  # the values its Relu nodes make (its neurons)
    parameters: int  # floating-point numbers in ``weights``

    @property
    def kind(self) -> str:
        """"dense" (flat values in and out), "conv" (channels × height × width in and out) or
        "other" (e.g. a pooling, a flatten and a dense layer)."""
        ranks = (len(self.in_shape), len(self.out_shape))
        return {(1, 1): "dense", (3, 3): "conv"}.get(ranks, "other")

    def nodes(self, network: Network) -> list[Node]:
        return network.nodes[self.start:self.end]

    def describe(self, network: Network) -> str:
        nodes = self.nodes(network)
        return f"{nodes[0].name}..{nodes[-1].name} ({'-'.join(n.op_type for n in nodes)}, {self.source} -> {self.target})"


def value_shapes(network: Network) -> dict[str, tuple[int, ...]]:
    """The per-sample shape of every value, from one run on zeros."""
    values = dict(network.constants_as(torch.float64, torch.device("cpu")))
    values[network.input_name] = torch.zeros((1,) + tuple(network.input_shape[1:]), dtype=torch.float64)
    values = network.run_nodes(network.nodes, values)
    return {name: tuple(value.shape[1:]) for name, value in values.items() if name not in network.constants}


def cuts(network: Network) -> list[frozenset[str]]:
    """``cuts[k]``: the values crossing the cut before node ``k`` (k = 0 .. len(nodes))."""
    nodes = network.nodes
    made = {network.input_name}
    read_after: list[set[str]] = [set() for _ in range(len(nodes) + 1)]
    read_after[len(nodes)] = {network.output_name}
    for k in range(len(nodes) - 1, -1, -1):
        read_after[k] = read_after[k + 1] | {name for name in nodes[k].inputs if name}
    found = []
    for k in range(len(nodes) + 1):
        found.append(frozenset(name for name in made if name in read_after[k] and name not in network.constants))
        if k < len(nodes):
            made.update(nodes[k].outputs)
    return found


def blocks_of(network: Network) -> list[Block]:
    """The network's blocks, in graph order (see the module docstring)."""
    nodes, crossing, shapes = network.nodes, cuts(network), value_shapes(network)
    found: list[Block] = []
    start = 0
    for end in range(1, len(nodes) + 1):
        if len(crossing[end]) != 1:
            continue
        while start < end and nodes[start].op_type in RESHAPES and len(crossing[start + 1]) == 1:
            start += 1
        run = nodes[start:end]
        if not run or len(crossing[start]) != 1 or run[-1].op_type != "Relu" or not any(n.op_type in WEIGHTED for n in run):
            continue
        (source,), (target,) = crossing[start], crossing[end]
        weights = tuple(dict.fromkeys(name for n in run for name in n.inputs if name in network.constants
                                      and network.constants[name].is_floating_point()))
        found.append(Block(start, end, source, target, shapes[source], shapes[target], weights,
                           tuple(n.outputs[0] for n in run if n.op_type == "Relu"),
                           int(sum(np.prod(network.constants[w].shape) for w in weights))))
        start = end
    return found
