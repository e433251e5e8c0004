"""The layers INNER probes and repairs: each hidden activation with the weight that feeds it.

A layer is an activation node (ReLU, sigmoid, tanh) whose input is computed by a dense or
convolution node (Gemm, MatMul, Conv, possibly through a bias ``Add`` or a batch normalisation)
from a trainable initializer of the network's own graph (`TrainableNetwork`) that nothing else
reads: masking or changing that tensor changes exactly this layer's incoming weights. Its *units*
are the weight's output axis (a dense unit or a convolution channel).

Features of a layer are its activation values per input. A convolution feature map [C, H, W] is
reduced by global average pooling to C features (one per channel) before the probe reads it: a
linear head on the flattened map has C·H·W inputs per class and would need far more clean inputs
than a repair problem offers (this is where verirepair's probes differ from INNER's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..parameters import ACTIVATIONS, TrainableNetwork

Tensor = torch.Tensor
PASS_THROUGH = ("Add", "Sub", "BatchNormalization")  # bias or normalisation between the weight and the activation


@dataclass(frozen=True)
class Layer:
    activation: str  # the activation's output value
    weight: str  # the trainable initializer of its incoming weights
    unit_axis: int  # the weight's axis along the layer's units
    node_index: int  # position of the activation node in `Network.nodes`


def _unit_axis(op_type: str, attributes: dict, weight_position: int, rank: int) -> int:
    if op_type == "Gemm":
        return 0 if int(attributes.get("transB", 0)) else 1
    if op_type == "MatMul":
        return rank - 1 if weight_position == 1 else rank - 2
    return 1 if op_type == "ConvTranspose" else 0


def repairable_layers(module: TrainableNetwork) -> tuple[Layer, ...]:
    """The network's layers in graph order (see the module docstring)."""
    network = module.network
    producer = {name: node for node in network.nodes for name in node.outputs}
    uses: dict[str, int] = {}
    for node in network.nodes:
        for name in node.inputs:
            uses[name] = uses.get(name, 0) + 1
    trainable = set(module.names)
    found = []
    for index, node in enumerate(network.nodes):
        if node.op_type not in ACTIVATIONS:
            continue
        source = producer.get(node.inputs[0])
        while source is not None and source.op_type in PASS_THROUGH:
            computed = [name for name in source.inputs if name in producer]
            source = producer[computed[0]] if len(computed) == 1 else None
        if source is None or source.op_type not in ("Gemm", "MatMul", "Conv", "ConvTranspose"):
            continue
        weights = [(position, name) for position, name in enumerate(source.inputs[:2])
                   if name in trainable and uses.get(name) == 1 and module.parameter(name).dim() >= 2]
        if len(weights) != 1:
            continue
        position, weight = weights[0]
        axis = _unit_axis(source.op_type, source.attributes, position, module.parameter(weight).dim())
        found.append(Layer(node.outputs[0], weight, axis, index))
    return tuple(found)


def layer_values(module: TrainableNetwork, layer: Layer, x: Tensor, weight: Tensor | None = None) -> Tensor:
    """The layer's activation values on flat inputs ``x``, computed with ``weight`` in place of
    its incoming weights when given (differentiable in it)."""
    network = module.network
    values = module.constants()
    if weight is not None:
        values[layer.weight] = weight
    values[network.input_name] = x.reshape((x.shape[0],) + tuple(network.input_shape[1:]))
    return network.run_nodes(network.nodes[:layer.node_index + 1], values)[layer.activation]


def features(activations: Tensor) -> Tensor:
    """[B, F]: a dense layer's values as they are, a feature map [B, C, ...] averaged per channel."""
    if activations.dim() > 2:
        return activations.flatten(2).mean(dim=2)
    return activations.reshape(activations.shape[0], -1)
