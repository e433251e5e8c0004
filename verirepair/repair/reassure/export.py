"""Write a `ReluMlp` (the REASSURE patch network) as one ONNX model, to sit beside the original
graph (`beside.patched_model`).

Standard operators only (``Flatten`` when the input is not [batch, n], ``Gemm``, ``Relu``,
``Reshape`` when the output is not [batch, m]), opset 13, every constant in the original's element
type and no ``Cast`` (`export_io`): other verifiers read the file as they read the original. The
weights are rounded to that type here; the loop verifies the file as written, so the proof covers
the rounded weights. The input and output keep the original model's declarations.
"""

from __future__ import annotations

import json

import onnx
from onnx import helper

from ...network import Network
from ..export_io import (
    constant,
    flat_input,
    flat_output,
    io_declarations,
    reshape_output,
)
from .regions import ReluMlp

OPSET = 13
PREFIX = "repair_"


def mlp_to_onnx(mlp: ReluMlp, like: Network, metadata: dict[str, object] | None = None) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current = flat_input(like, nodes, PREFIX)
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        out = flat_output(like, PREFIX) if i == last else f"{PREFIX}z{i}"
        inits += [constant(f"{PREFIX}W{i}", w, like), constant(f"{PREFIX}B{i}", b, like)]
        nodes.append(helper.make_node("Gemm", [current, f"{PREFIX}W{i}", f"{PREFIX}B{i}"], [out], transB=1))
        current = out
        if i < last:
            nodes.append(helper.make_node("Relu", [out], [f"{PREFIX}h{i}"]))
            current = f"{PREFIX}h{i}"
    return chain_model(nodes, inits, like, metadata)


def chain_model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], like: Network,
                metadata: dict[str, object] | None = None) -> onnx.ModelProto:
    """The model of a patch chain whose last node writes `flat_output`: the output reshaped to the
    original's shape, the original's input and output declarations, ``metadata`` as a JSON entry."""
    nodes, inits = list(nodes), list(initializers)
    reshape_output(like, nodes, inits, PREFIX)
    declared_input, declared_output = io_declarations(like)
    graph = helper.make_graph(nodes, "verirepair_repaired", [declared_input], [declared_output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="verirepair-repair")
    model.ir_version = 8
    if metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = "verirepair.repair", json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(model, full_check=True)
    return model
