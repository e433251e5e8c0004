"""Lower an imported `Network` into a `Chain` of dense affine maps and activations.

Every maximal run of input-dependent nodes between two non-linear nodes is an affine map of
its input (Gemm, Conv, BatchNorm, AveragePool, Flatten, Sub/Div by constants, ...). Instead of
one linearisation rule per ONNX operator we evaluate that run on the basis vectors in float64,
which gives its exact matrix, and then confirm affinity on random points: a run that is not
affine (say a product of two activations) is refused, never silently approximated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UnsupportedError
from ..network import Network, Node
from .layers import ActivationLayer, AffineLayer, Chain, Layer, MaxPoolLayer

NONLINEAR = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
# Affinity check: relative error allowed between the run and its extracted matrix on random
# points. Float64 evaluation of an affine map differs from W·x+b by rounding only (~1e-13).
AFFINITY_TOLERANCE = 1e-8
BASIS_CHUNK = 1024  # basis vectors evaluated at once; bounds the memory of wide layers


def _dynamic_input(node: Node, network: Network, dynamic: set[str]) -> str:
    names = [n for n in node.inputs if n in dynamic]
    if len(names) != 1:
        raise UnsupportedError(network.path, f"node '{node.name}' ({node.op_type})",
                               "the bound engine needs a chain graph (each node with one input-dependent operand)")
    return names[0]


def _shape_of_values(network: Network) -> dict[str, tuple[int, ...]]:
    """Runtime shapes (batch 1) of every value, from one probe evaluation."""
    probe = torch.zeros((1,) + tuple(network.input_shape[1:]), dtype=torch.float64)
    values = dict(network.constants_as(torch.float64, probe.device))
    values[network.input_name] = probe
    values = network.run_nodes(network.nodes, values)
    return {k: tuple(v.shape) for k, v in values.items()}


def _affine_of_run(network: Network, run: list[Node], start: str, end: str, shapes: dict[str, tuple[int, ...]]) -> AffineLayer:
    n_in = math.prod(shapes[start][1:])
    constants = network.constants_as(torch.float64, torch.device("cpu"))

    def evaluate(points: torch.Tensor) -> torch.Tensor:
        values = dict(constants)
        values[start] = points.reshape((points.shape[0],) + shapes[start][1:])
        return network.run_nodes(run, values)[end].reshape(points.shape[0], -1)

    bias = evaluate(torch.zeros(1, n_in, dtype=torch.float64))[0]
    columns = []
    for first in range(0, n_in, BASIS_CHUNK):
        count = min(BASIS_CHUNK, n_in - first)
        basis = torch.zeros(count, n_in, dtype=torch.float64)
        basis[torch.arange(count), first + torch.arange(count)] = 1.0
        columns.append(evaluate(basis) - bias)
    weight = torch.cat(columns).T.contiguous()
    probe = torch.randn(3, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = probe @ weight.T + bias
    error = (evaluate(probe) - expected).abs().max().item()
    if error > AFFINITY_TOLERANCE * (1.0 + expected.abs().max().item()):
        ops = ", ".join(sorted({n.op_type for n in run}))
        raise UnsupportedError(network.path, f"nodes {run[0].name}..{run[-1].name}",
                               f"the part made of {ops} is not affine in the input; not supported by the bound engine yet")
    return AffineLayer(weight, bias)


def _max_pool_windows(node: Node, input_shape: tuple[int, ...]) -> MaxPoolLayer:
    channels_shape = input_shape[1:]
    n_in = math.prod(channels_shape)
    index = torch.arange(n_in, dtype=torch.float64).reshape((1,) + channels_shape)
    kernel = list(node.attributes["kernel_shape"])
    strides = list(node.attributes.get("strides", [1] * len(kernel)))
    channels = channels_shape[0]
    patches = F.unfold(index.reshape(channels, 1, *channels_shape[1:]), kernel, stride=strides)
    windows = patches.permute(0, 2, 1).reshape(-1, patches.shape[1]).round().long()
    return MaxPoolLayer(windows, n_in)


def _identity(size: int) -> AffineLayer:
    return AffineLayer(torch.eye(size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64))


def lower_network(network: Network) -> Chain:
    """The `Chain` equivalent of ``network`` (exact: no relaxation happens here)."""
    shapes = _shape_of_values(network)
    dynamic = {network.input_name}
    layers: list[Layer] = []
    run: list[Node] = []
    run_start = network.input_name
    current = network.input_name

    def close_run() -> None:
        nonlocal run
        if run:
            layers.append(_affine_of_run(network, run, run_start, current, shapes))
        elif not layers:
            layers.append(_identity(math.prod(shapes[current][1:])))
        run = []

    for node in network.nodes:
        source = _dynamic_input(node, network, dynamic)
        if source != current:
            raise UnsupportedError(network.path, f"node '{node.name}'", "branching graphs are not supported by the bound engine yet")
        if node.op_type in NONLINEAR or node.op_type == "MaxPool":
            close_run()
            size = math.prod(shapes[source][1:])
            if node.op_type == "MaxPool":
                layers.append(_max_pool_windows(node, shapes[source]))
            else:
                layers.append(ActivationLayer(NONLINEAR[node.op_type], size))
            run_start = node.outputs[0]
        else:
            run.append(node)
        current = node.outputs[0]
        dynamic.add(current)
    close_run()
    if not isinstance(layers[-1], AffineLayer):
        layers.append(_identity(math.prod(shapes[current][1:])))
    if current != network.output_name:
        raise UnsupportedError(network.path, "graph", "the output is not the end of the node chain")
    return Chain(tuple(_merge_affine(layers)))


def _merge_affine(layers: list[Layer]) -> list[Layer]:
    merged: list[Layer] = []
    for layer in layers:
        if isinstance(layer, AffineLayer) and merged and isinstance(merged[-1], AffineLayer):
            first = merged.pop()
            assert isinstance(first, AffineLayer)
            layer = AffineLayer(layer.weight @ first.weight, layer.weight @ first.bias + layer.bias)
        merged.append(layer)
    return merged
