"""Load and check an ONNX file, then convert it into a `Network` of torch operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model

from ..errors import InputError, UnsupportedError
from ..files import read_input_bytes
from .model import Network, Node
from .operators import CONVERTERS


def read_onnx_model(path: Path, load_external_data: bool = True) -> onnx.ModelProto:
    """The model in ``path`` (gzip-compressed or not), not yet checked; external tensor data is
    read from the file's folder, as `onnx.load` does."""
    if not path.exists():
        raise InputError(path, None, "no such file")
    if not path.is_file():
        raise InputError(path, None, "not a regular file")
    data = read_input_bytes(path)
    try:
        model = onnx.load_model_from_string(data)
        if load_external_data:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # protobuf raises several unrelated types
        raise InputError(path, None, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    return model


def _read_model(path: Path) -> onnx.ModelProto:
    model = read_onnx_model(path)
    if not model.graph.node:
        raise InputError(path, None, "not an ONNX model (the graph has no nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputError(path, None, f"invalid ONNX model: {str(exc).splitlines()[0]}") from None
    return model


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = _to_torch(numpy_helper.to_array(value))
        elif isinstance(value, list):
            value = list(value)
        attrs[attr.name] = value
    return attrs


def _to_torch(array: np.ndarray) -> torch.Tensor:
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.array(array, dtype=np.float64))
    return torch.from_numpy(np.array(array, dtype=np.int64))


def _shape_of(value: onnx.ValueInfoProto, path: Path) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    if not shape:
        raise InputError(path, f"value '{value.name}'", "scalar inputs/outputs are not supported")
    return shape


def load_network(path: str | Path) -> Network:
    """Read ``path`` and convert it; every unsupported operator is listed in one error."""
    path = Path(path)
    model = _read_model(path)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    initialisers = {init.name: _to_torch(numpy_helper.to_array(init)) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UnsupportedError(path, "graph inputs", f"exactly one input is supported, found {len(inputs)} ({names})")
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise UnsupportedError(path, "graph outputs", f"exactly one output is supported, found {len(graph.output)} ({names})")

    unsupported = sorted({n.op_type for n in graph.node if n.op_type not in CONVERTERS or n.domain not in ("", "ai.onnx")})
    if unsupported:
        raise UnsupportedError(path, "graph", f"unsupported operators: {', '.join(unsupported)}")

    nodes: list[Node] = []
    for index, proto in enumerate(graph.node):
        name = proto.name or f"node{index}"
        try:
            operation = CONVERTERS[proto.op_type](_attributes(proto), opset)
        except (ValueError, KeyError) as exc:
            raise UnsupportedError(path, f"node '{name}' ({proto.op_type})", str(exc)) from None
        nodes.append(Node(proto.op_type, name, tuple(proto.input), tuple(proto.output), _attributes(proto), operation))

    elem_type = inputs[0].type.tensor_type.elem_type
    network = Network(
        path=path,
        input_name=inputs[0].name,
        input_shape=_shape_of(inputs[0], path),
        output_name=graph.output[0].name,
        output_shape=_shape_of(graph.output[0], path),
        input_dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)),
        nodes=nodes,
        constants=initialisers,
    )
    return _fold_constants(network, path)


def _refuse_non_finite(constants: dict[str, torch.Tensor], path: Path) -> None:
    """A NaN or infinite weight makes every bound NaN or infinite, and a comparison with NaN is
    false, so such a network could be "proven" anything: it is bad input, every such tensor named."""
    bad = sorted(name for name, value in constants.items()
                 if value.is_floating_point() and not bool(torch.isfinite(value).all()))
    if bad:
        raise InputError(path, "initializers", f"NaN or infinite values in {', '.join(bad)}")


def _fold_constants(network: Network, path: Path) -> Network:
    """Evaluate nodes whose inputs are all constant once, so only input-dependent nodes remain."""
    constants = dict(network.constants)
    remaining: list[Node] = []
    for node in network.nodes:
        if all((not name) or name in constants for name in node.inputs):
            try:
                constants.update(network.run_nodes([node], constants))
            except Exception as exc:
                raise InputError(path, f"node '{node.name}' ({node.op_type})", f"cannot evaluate: {exc}") from None
        else:
            remaining.append(node)
    network.nodes = remaining
    network.constants = {k: v for k, v in constants.items() if k != network.input_name}
    _refuse_non_finite(network.constants, path)
    try:
        probe = torch.zeros(2, network.n_inputs, dtype=torch.float64)
        out = network.forward(probe)
    except Exception as exc:
        raise InputError(path, "graph", f"cannot run the imported graph: {type(exc).__name__}: {exc}") from None
    if out.shape[1] != network.n_outputs:
        raise InputError(path, "graph", f"output has {out.shape[1]} values, declared shape {network.output_shape}")
    return network
