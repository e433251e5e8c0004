"""Load and check an ONNX file, then convert it into a `Network` of torch operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model
from onnx.reference import ReferenceEvaluator

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

    initialisers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UnsupportedError(path, "graph inputs", f"exactly one input is supported, found {len(inputs)} ({names})")
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise UnsupportedError(path, "graph outputs", f"exactly one output is supported, found {len(graph.output)} ({names})")

    elem_type = inputs[0].type.tensor_type.elem_type
    network = Network(
        path=path,
        input_name=inputs[0].name,
        input_shape=_shape_of(inputs[0], path),
        output_name=graph.output[0].name,
        output_shape=_shape_of(graph.output[0], path),
        input_dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)),
        nodes=[],
        constants={},
    )
    nodes, constants = _GraphFolder(model, opset, path, initialisers, network).run()
    network.nodes = nodes
    used = {name for node in nodes for name in node.inputs} | {network.output_name}
    network.constants = {name: _to_torch(value) for name, value in constants.items() if name in used}
    _refuse_non_finite(network.constants, path)
    _check_runs(network, path)
    return network


def _refuse_non_finite(constants: dict[str, torch.Tensor], path: Path) -> None:
    """A NaN or infinite weight makes every bound NaN or infinite, and a comparison with NaN is
    false, so such a network could be "proven" anything: it is bad input, every such tensor named."""
    bad = sorted(name for name, value in constants.items()
                 if value.is_floating_point() and not bool(torch.isfinite(value).all()))
    if bad:
        raise InputError(path, "initializers", f"NaN or infinite values in {', '.join(bad)}")


# Operators whose result depends only on the shape of their input, which the probe run knows.
SHAPE_ONLY = ("Shape", "Size")


class _GraphFolder:
    """One pass over the nodes in file order that splits them into constants and operations.

    A node whose inputs are all constant (initialisers, Constant nodes, or anything computed from
    them) is evaluated once by ONNX's reference implementation, in the file's own dtypes, so shape
    subgraphs fold with exactly ONNX semantics whatever operators they use. Shape and Size of an
    input-dependent tensor fold too: the pass runs every remaining operation on a probe input of the
    declared shape (batch 1), so it knows each tensor's shape. What is left are the input-dependent
    operations, converted by `CONVERTERS`; unsupported operators are collected and listed together.
    """

    def __init__(self, model: onnx.ModelProto, opset: int, path: Path, initialisers: dict[str, np.ndarray],
                 network: Network) -> None:
        self.model, self.opset, self.path = model, opset, path
        self.constants: dict[str, np.ndarray] = dict(initialisers)
        self.probe: dict[str, torch.Tensor] = {
            network.input_name: torch.zeros(network.input_shape, dtype=torch.float64)}
        self.nodes: list[Node] = []
        self.unsupported: set[str] = set()
        self.refusal: InputError | None = None
        self.consumed = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}

    def run(self) -> tuple[list[Node], dict[str, np.ndarray]]:
        for index, proto in enumerate(self.model.graph.node):
            name = proto.name or f"node{index}"
            present = [i for i in proto.input if i]
            if all(i in self.constants for i in present):
                self._fold(proto, name, {i: self.constants[i] for i in present})
            elif proto.op_type in SHAPE_ONLY:
                if proto.input[0] in self.probe:  # else downstream of a refused node, already reported
                    shape = tuple(self.probe[proto.input[0]].shape)
                    self._fold(proto, name, {proto.input[0]: np.zeros(shape, dtype=np.float32)})
            else:
                self._convert(proto, name)
        if self.unsupported:
            raise UnsupportedError(self.path, "graph", f"unsupported operators: {', '.join(sorted(self.unsupported))}")
        if self.refusal is not None:
            raise self.refusal
        return self.nodes, self.constants

    def _fold(self, proto: onnx.NodeProto, name: str, feeds: dict[str, np.ndarray]) -> None:
        graph = onnx.helper.make_graph([proto], "fold", [], [])
        single = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        try:
            results = ReferenceEvaluator(single).run(list(proto.output), feeds)
        except Exception as exc:  # the reference implementation raises many unrelated types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(self.path, f"node '{name}' ({proto.op_type})", f"cannot evaluate: {reason}") from None
        self.constants.update((output, np.asarray(value)) for output, value in zip(proto.output, results) if output)

    def _convert(self, proto: onnx.NodeProto, name: str) -> None:
        if proto.op_type not in CONVERTERS or proto.domain not in ("", "ai.onnx"):
            self.unsupported.add(proto.op_type if proto.domain in ("", "ai.onnx") else f"{proto.domain}.{proto.op_type}")
            return
        if not all((not i) or i in self.probe or i in self.constants for i in proto.input):
            return  # downstream of a refused node: already reported
        place = f"node '{name}' ({proto.op_type})"
        attributes = _attributes(proto)
        sizes_given = "split" in attributes or "num_outputs" in attributes or any(proto.input[1:2])
        if proto.op_type == "Split" and not sizes_given:
            attributes["num_outputs"] = len(proto.output)  # ONNX's equal split into the outputs
        try:
            operation = CONVERTERS[proto.op_type](attributes, self.opset)
            args = [None if not i else self.probe[i] if i in self.probe else _to_torch(self.constants[i])
                    for i in proto.input]
            result = operation(*args)
        except ValueError as exc:
            self.refusal = self.refusal or UnsupportedError(self.path, place, str(exc))
            return
        except Exception as exc:
            raise InputError(self.path, place, f"cannot run: {type(exc).__name__}: {exc}") from None  # torch's many types
        results = result if isinstance(result, tuple) else (result,)
        unsupplied = [o for o in proto.output[len(results):] if o in self.consumed]
        if unsupplied:
            self.refusal = self.refusal or UnsupportedError(self.path, place, f"output '{unsupplied[0]}' is not supported")
            return
        self.probe.update((output, value) for output, value in zip(proto.output, results) if output)
        self.nodes.append(Node(proto.op_type, name, tuple(proto.input), tuple(proto.output), attributes, operation))


def _check_runs(network: Network, path: Path) -> None:
    """The converted graph runs on a batch of two and gives the declared number of outputs."""
    try:
        probe = torch.zeros(2, network.n_inputs, dtype=torch.float64)
        out = network.forward(probe)
    except Exception as exc:
        raise InputError(path, "graph", f"cannot run the imported graph: {type(exc).__name__}: {exc}") from None
    if out.shape[1] != network.n_outputs:
        raise InputError(path, "graph", f"output has {out.shape[1]} values, declared shape {network.output_shape}")
