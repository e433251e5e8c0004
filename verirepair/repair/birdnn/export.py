"""Export a dense `Chain` as an ONNX model with the original network's input and output.

The repaired network must be a drop-in replacement: same input name, shape and element type, same
output name and shape. The graph is ``Flatten`` (the input as [batch, n]) → ``Gemm`` (+ ``Relu`` /
``Sigmoid`` / ``Tanh``) per layer → ``Reshape`` back to the output shape when it is not [batch, m].
Weights are written in the input's element type (float32 for every benchmark file).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...bounds import ActivationLayer, AffineLayer, Chain
from ...errors import UnsupportedError
from ...network import Network, read_onnx_model

OPSET = 13
IR_VERSION = 8  # opset 13 needs IR >= 7; 8 is read by every onnxruntime the project supports
ONNX_ACTIVATION = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def _value_info(name: str, shape: tuple[int, ...], element: int, original: onnx.ValueInfoProto | None) -> onnx.ValueInfoProto:
    """The original declaration when we have it (keeps symbolic batch dimensions), else a fixed one."""
    if original is not None:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(original)
        return copy
    return helper.make_tensor_value_info(name, element, list(shape))


def _declarations(network: Network) -> tuple[onnx.ValueInfoProto | None, onnx.ValueInfoProto | None]:
    if network.path is None or not network.path.exists():
        return None, None
    graph = read_onnx_model(network.path, load_external_data=False).graph
    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    return inputs.get(network.input_name), outputs.get(network.output_name)


def chain_onnx(chain: Chain, like: Network, doc: str = "repaired by verirepair (BIRDNN)") -> onnx.ModelProto:
    """``chain`` as a checked ONNX model whose input and output are declared as in ``like``."""
    dtype = np.dtype(like.input_dtype)
    if dtype not in ELEMENT_TYPES:
        raise UnsupportedError(like.path, "input", f"cannot export a network with {dtype} inputs")
    element = ELEMENT_TYPES[dtype]
    if chain.n_inputs != like.n_inputs or chain.n_outputs != like.n_outputs:
        raise ValueError("the chain's sizes differ from the network it replaces")
    nodes = [helper.make_node("Flatten", [like.input_name], ["birdnn.flat"], name="birdnn.flatten", axis=1)]
    initialisers: list[onnx.TensorProto] = []
    current = "birdnn.flat"
    needs_reshape = len(like.output_shape) != 2
    affine_count = sum(isinstance(layer, AffineLayer) for layer in chain.layers)
    seen = 0
    for index, layer in enumerate(chain.layers):
        if isinstance(layer, AffineLayer):
            seen += 1
            weight, bias = f"birdnn.layer{index}.weight", f"birdnn.layer{index}.bias"
            initialisers += [numpy_helper.from_array(layer.weight.numpy().astype(dtype), weight),
                             numpy_helper.from_array(layer.bias.numpy().astype(dtype), bias)]
            last = seen == affine_count
            out = like.output_name if last and not needs_reshape else f"birdnn.layer{index}.gemm"
            nodes.append(helper.make_node("Gemm", [current, weight, bias], [out], name=f"birdnn.layer{index}.gemm", transB=1))
            current = out
        elif isinstance(layer, ActivationLayer):
            op = ONNX_ACTIVATION[layer.kind]
            out = f"birdnn.layer{index}.{layer.kind}"
            nodes.append(helper.make_node(op, [current], [out], name=f"birdnn.layer{index}.{layer.kind}"))
            current = out
        else:
            raise UnsupportedError(like.path, "network", f"cannot export {type(layer).__name__} layers")
    if needs_reshape:
        shape = np.array([-1] + list(like.output_shape[1:]), dtype=np.int64)
        initialisers.append(numpy_helper.from_array(shape, "birdnn.output_shape"))
        nodes.append(helper.make_node("Reshape", [current, "birdnn.output_shape"], [like.output_name], name="birdnn.reshape"))
    original_input, original_output = _declarations(like)
    graph = helper.make_graph(
        nodes, "birdnn_repaired",
        [_value_info(like.input_name, like.input_shape, element, original_input)],
        [_value_info(like.output_name, like.output_shape, element, original_output)],
        initialisers)
    model = helper.make_model(graph, producer_name="verirepair", doc_string=doc,
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    assert math.prod(like.output_shape[1:]) == chain.n_outputs
    return model
