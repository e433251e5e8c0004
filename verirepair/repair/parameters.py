"""The network's own graph with trainable weights, and its export into the original ONNX model.

Strategies that change weights (BIRDNN) train the float initializers of the original ONNX model
that the input-dependent nodes read as coefficients or offsets (`TRAINABLE_OPERANDS`). The forward
pass runs the imported network's own nodes (`Network.run_nodes`) over those parameters, so a CNN
trains as a CNN; `exported_model` copies the original model and replaces only those
initializers' data, cast to their own element type: the same nodes, value names, shapes and types.

An initializer is trainable only where every one of its uses is such an operand of a node that
remained after the importer's constant folding: one that also feeds a folded node (evaluated once
into another constant) would leave that constant stale in training while the exported file
recomputes it from the new value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..bounds import BoundGraph, build_graph
from ..errors import UnsupportedError
from ..network import Network, read_onnx_model

Tensor = torch.Tensor

TRAINABLE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Gemm": (1, 2), "MatMul": (0, 1), "Conv": (1, 2), "ConvTranspose": (1, 2), "BatchNormalization": (1, 2),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1),
}
"""Operand positions, per operator, that are coefficients or offsets: values that may move freely
(a divisor, a variance or a shape may not)."""
ACTIVATIONS = ("Relu", "Sigmoid", "Tanh")
RESHAPES = ("Flatten", "Reshape")


def original_model(network: Network) -> onnx.ModelProto:
    """The ONNX model ``network`` was imported from."""
    if network.path is None:
        raise UnsupportedError(None, "network", "repair that changes weights needs the ONNX file the network came from")
    return read_onnx_model(network.path)


def _imported_as_is(network: Network, initializer: onnx.TensorProto) -> bool:
    """Whether the network holds the initializer unchanged under its name (so the trained tensor
    is written back in the initializer's own layout)."""
    value = network.constants.get(initializer.name)
    array = numpy_helper.to_array(initializer)
    return value is not None and tuple(value.shape) == array.shape and np.array_equal(value.numpy(), array.astype(np.float64))


def trainable_initializers(network: Network, model: onnx.ModelProto) -> tuple[str, ...]:
    """The float initializers of ``model`` used only as `TRAINABLE_OPERANDS` of ``network``'s
    (input-dependent) nodes and imported unchanged, in the model's order."""
    floats = [init.name for init in model.graph.initializer
              if np.issubdtype(helper.tensor_dtype_to_np_dtype(init.data_type), np.floating)
              and _imported_as_is(network, init)]
    remaining = {node.outputs for node in network.nodes}
    allowed: set[str] = set()
    refused: set[str] = set()
    for proto in model.graph.node:
        positions = TRAINABLE_OPERANDS.get(proto.op_type, ()) if tuple(proto.output) in remaining else ()
        for position, name in enumerate(proto.input):
            (allowed if position in positions else refused).add(name)
    return tuple(name for name in floats if name in allowed and name not in refused)


@dataclass(frozen=True)
class HiddenLayer:
    """An activation's output read only by one dense node (through reshapes): scaling its neuron
    ``j`` is scaling entry ``j`` along ``axis`` of that node's weight ``weight``."""

    value: str
    size: int
    weight: str
    axis: int


class TrainableNetwork(torch.nn.Module):
    """The imported network's nodes as a torch module whose trainable initializers are parameters.

    ``forward`` maps flat inputs [B, n_inputs] to flat outputs [B, n_outputs] (the module's dtype).
    """

    def __init__(self, network: Network, dtype: torch.dtype = torch.float32, model: onnx.ModelProto | None = None) -> None:
        super().__init__()
        self.network = network
        self.model = model if model is not None else original_model(network)
        self.dtype = dtype
        self.names = trainable_initializers(network, self.model)
        constants = network.constants_as(dtype, torch.device("cpu"))
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(constants[name].clone()) for name in self.names])
        self.fixed = {name: value for name, value in constants.items() if name not in set(self.names)}

    def __deepcopy__(self, memo: dict[int, object]) -> TrainableNetwork:
        """A copy with its own parameters; the network and model (never changed) are shared."""
        twin = TrainableNetwork(self.network, self.dtype, self.model)
        twin.load(self.state())
        twin.requires_grad_(any(p.requires_grad for p in self.parameters()))
        return twin

    def parameter(self, name: str) -> torch.nn.Parameter:
        return self.weights[self.names.index(name)]

    def constants(self) -> dict[str, Tensor]:
        """Every constant of the network, the trainable ones as the parameters themselves."""
        return {**self.fixed, **dict(zip(self.names, self.weights))}

    def values(self, x: Tensor, scale: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Every value on flat inputs ``x``; ``scale`` multiplies named values (by factors of their
        shape flattened, [B, size]) as they are computed."""
        network = self.network
        batch = x.shape[0]
        values = self.constants()
        if batch == 0:  # a reshape to an inferred size cannot run on an empty batch: one row, cut
            probe = self.values(x.new_zeros((1,) + tuple(x.shape[1:])))
            return {name: value if name in values else value[:0] for name, value in probe.items()}
        values[network.input_name] = x.reshape((batch,) + tuple(network.input_shape[1:]))
        if not scale:
            return network.run_nodes(network.nodes, values)
        for node in network.nodes:
            values = network.run_nodes([node], values)
            for name in node.outputs:
                if name in scale:
                    values[name] = values[name] * scale[name].reshape(values[name].shape)
        return values

    def forward(self, x: Tensor, scale: dict[str, Tensor] | None = None) -> Tensor:
        return self.values(x, scale)[self.network.output_name].reshape(x.shape[0], self.network.n_outputs)

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Outputs and the values [B, size] of every `hidden_layers` entry."""
        values = self.values(x)
        hidden = [values[layer.value].reshape(x.shape[0], layer.size) for layer in self.hidden_layers]
        return values[self.network.output_name].reshape(x.shape[0], self.network.n_outputs), hidden

    @cached_property
    def hidden_layers(self) -> tuple[HiddenLayer, ...]:
        """The activations whose neurons can be scaled by changing one weight (see `HiddenLayer`)."""
        network = self.network
        shapes = {name: value.shape[1:] for name, value in self.values(torch.zeros(1, network.n_inputs, dtype=self.dtype)).items()
                  if isinstance(value, Tensor) and name not in self.fixed and name not in self.names}
        readers: dict[str, list] = {}
        for node in network.nodes:
            for name in dict.fromkeys(node.inputs):
                readers.setdefault(name, []).append(node)
        uses = {name: sum(name in node.inputs for node in network.nodes) for name in self.names}
        found = []
        for node in network.nodes:
            if node.op_type not in ACTIVATIONS:
                continue
            value = node.outputs[0]
            size = int(np.prod(shapes[value]))
            while value != network.output_name and len(readers.get(value, [])) == 1:
                reader = readers[value][0]
                if reader.op_type in RESHAPES and reader.inputs[0] == value:
                    value = reader.outputs[0]
                    continue
                weight = reader.inputs[1] if len(reader.inputs) > 1 else ""
                dense = reader.op_type == "MatMul" or (reader.op_type == "Gemm" and not int(reader.attributes.get("transA", 0)))
                if (dense and reader.inputs[0] == value and weight in uses and uses[weight] == 1
                        and tuple(shapes[value]) == (size,) and self.parameter(weight).dim() == 2):
                    axis = 1 if reader.op_type == "Gemm" and int(reader.attributes.get("transB", 0)) else 0
                    found.append(HiddenLayer(node.outputs[0], size, weight, axis))
                break
        return tuple(found)

    def state(self) -> list[Tensor]:
        """A detached copy of every parameter (for rollback)."""
        return [p.detach().clone() for p in self.parameters()]

    def load(self, state: list[Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.parameters(), state):
                parameter.copy_(value)

    def bound_graph(self) -> BoundGraph:
        """The bound graph of the current weights. Its operators hold the parameters (converted to
        float64, not copied), so bounds computed on it are differentiable in them."""
        return build_graph(self.network.with_constants({**self.network.constants, **dict(zip(self.names, self.weights))}))


def exported_model(module: TrainableNetwork, metadata: dict[str, object] | None = None) -> onnx.ModelProto:
    """The original ONNX model with the module's trainable initializers (in their own element type)."""
    model = onnx.ModelProto()
    model.CopyFrom(module.model)
    current = dict(zip(module.names, module.weights))
    for initializer in model.graph.initializer:
        if initializer.name in current:
            dtype = helper.tensor_dtype_to_np_dtype(initializer.data_type)
            array = current[initializer.name].detach().cpu().numpy().astype(dtype).reshape(tuple(initializer.dims))
            initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
    if metadata:
        kept = [entry for entry in model.metadata_props if entry.key != "verirepair.repair"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = "verirepair.repair", json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(model)
    return model
