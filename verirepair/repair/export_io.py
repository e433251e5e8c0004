"""What every repaired ONNX file shares with its original: element type and input/output declarations.

A repaired file is a drop-in replacement, also for other verifiers (Marabou, NeuralSAT), which read
only a few operators and element types: its constants are written in the original's floating
element type (float32 for every benchmark file) and it has no ``Cast`` nodes; its input and output
keep the original's names, shapes (symbolic batch dimensions included) and element types.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import UnsupportedError
from ..network import Network, read_onnx_model

ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def element_type(like: Network) -> tuple[np.dtype, int]:
    """The numpy dtype and ONNX element type the repaired file's constants are written in."""
    dtype = np.dtype(like.input_dtype)
    if dtype not in ELEMENT_TYPES:
        raise UnsupportedError(like.path, "input", f"cannot export a repaired network with {dtype} inputs")
    return dtype, ELEMENT_TYPES[dtype]


def stored_parameters(model: onnx.ModelProto) -> int:
    """The floating-point numbers ``model``'s initializers hold: what a patch graph adds to a file,
    counted as stored (a weight shared by several units, or stored once for two, counts once)."""
    floating = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer if t.data_type in floating))


def constant(name: str, array: np.ndarray, like: Network) -> onnx.TensorProto:
    """``array`` as an initializer in the original's element type (rounded to it when float32)."""
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=element_type(like)[0]), name)


def _declared(name: str, shape: tuple[int, ...], element: int, original: onnx.ValueInfoProto | None) -> onnx.ValueInfoProto:
    if original is not None:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(original)
        return copy
    return helper.make_tensor_value_info(name, element, [int(d) for d in shape])


def io_declarations(like: Network) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    """The graph input and output of ``like``'s file when it is at hand (keeps symbolic batch
    dimensions and the output's element type), else declarations built from ``like``'s shapes."""
    inputs: dict[str, onnx.ValueInfoProto] = {}
    outputs: dict[str, onnx.ValueInfoProto] = {}
    if like.path is not None and like.path.exists():
        graph = read_onnx_model(like.path, load_external_data=False).graph
        inputs, outputs = {v.name: v for v in graph.input}, {v.name: v for v in graph.output}
    element = element_type(like)[1]
    return (_declared(like.input_name, like.input_shape, element, inputs.get(like.input_name)),
            _declared(like.output_name, like.output_shape, element, outputs.get(like.output_name)))


def flat_input(like: Network, nodes: list[onnx.NodeProto], prefix: str) -> str:
    """The input as [batch, n]: the input itself when it is so, else a ``Flatten`` appended to ``nodes``."""
    if len(like.input_shape) == 2:
        return like.input_name
    nodes.append(helper.make_node("Flatten", [like.input_name], [f"{prefix}flat_input"], name=f"{prefix}flatten", axis=1))
    return f"{prefix}flat_input"


def flat_output(like: Network, prefix: str) -> str:
    """The name the last layer writes its [batch, m] result to: the original's output when that is
    [batch, m] too, else one that `reshape_output` reshapes."""
    return like.output_name if len(like.output_shape) == 2 else f"{prefix}flat_output"


def reshape_output(like: Network, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], prefix: str) -> None:
    """The ``Reshape`` of `flat_output` to the original's output shape when they differ (its
    shape an int64 initializer, as the operator requires)."""
    if len(like.output_shape) == 2:
        return
    shape = np.array([-1] + [int(d) for d in like.output_shape[1:]], dtype=np.int64)
    initializers.append(numpy_helper.from_array(shape, f"{prefix}output_shape"))
    nodes.append(helper.make_node("Reshape", [flat_output(like, prefix), f"{prefix}output_shape"], [like.output_name],
                                  name=f"{prefix}reshape"))
