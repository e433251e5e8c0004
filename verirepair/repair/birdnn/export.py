"""Export a dense `Chain` as an ONNX model with the original network's input and output.

The repaired network must be a drop-in replacement (`export_io`): same input and output
declarations, constants in the original's element type, no ``Cast``. The graph is ``Flatten`` (when
the input is not [batch, n]) → ``Gemm`` (+ ``Relu`` / ``Sigmoid`` / ``Tanh``) per layer →
``Reshape`` back to the output shape when it is not [batch, m].
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from ...bounds import ActivationLayer, AffineLayer, Chain
from ...errors import UnsupportedError
from ...network import Network
from ..export_io import (
    constant,
    flat_input,
    flat_output,
    io_declarations,
    reshape_output,
)

OPSET = 13
IR_VERSION = 8  # opset 13 needs IR >= 7; 8 is read by every onnxruntime the project supports
ONNX_ACTIVATION = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
PREFIX = "birdnn."


def chain_onnx(chain: Chain, like: Network, doc: str = "repaired by verirepair (BIRDNN)") -> onnx.ModelProto:
    """``chain`` as a checked ONNX model whose input and output are declared as in ``like``."""
    if chain.n_inputs != like.n_inputs or chain.n_outputs != like.n_outputs:
        raise ValueError("the chain's sizes differ from the network it replaces")
    nodes: list[onnx.NodeProto] = []
    initialisers: list[onnx.TensorProto] = []
    current = flat_input(like, nodes, PREFIX)
    affine_count = sum(isinstance(layer, AffineLayer) for layer in chain.layers)
    seen = 0
    for index, layer in enumerate(chain.layers):
        if isinstance(layer, AffineLayer):
            seen += 1
            weight, bias = f"birdnn.layer{index}.weight", f"birdnn.layer{index}.bias"
            initialisers += [constant(weight, layer.weight.numpy(), like), constant(bias, layer.bias.numpy(), like)]
            out = flat_output(like, PREFIX) if seen == affine_count else f"birdnn.layer{index}.gemm"
            nodes.append(helper.make_node("Gemm", [current, weight, bias], [out], name=f"birdnn.layer{index}.gemm", transB=1))
            current = out
        elif isinstance(layer, ActivationLayer):
            op = ONNX_ACTIVATION[layer.kind]
            out = f"birdnn.layer{index}.{layer.kind}"
            nodes.append(helper.make_node(op, [current], [out], name=f"birdnn.layer{index}.{layer.kind}"))
            current = out
        else:
            raise UnsupportedError(like.path, "network", f"cannot export {type(layer).__name__} layers")
    reshape_output(like, nodes, initialisers, PREFIX)
    declared_input, declared_output = io_declarations(like)
    graph = helper.make_graph(nodes, "birdnn_repaired", [declared_input], [declared_output], initialisers)
    model = helper.make_model(graph, producer_name="verirepair", doc_string=doc,
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    assert math.prod(like.output_shape[1:]) == chain.n_outputs
    return model
