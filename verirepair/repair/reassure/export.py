"""Write a `ReluMlp` (the original layers widened with the patch units) as one ONNX model.

Standard operators only (``Flatten``, ``Cast``, ``Gemm``, ``Relu``, ``Reshape``), opset 13. The
input and output stay float32; inside, the layers run in float64 (``Cast`` in and out): the patch
units multiply region distances by the sharpness ``γ`` and the bound ``K``, which would amplify
float32 rounding of the weights and activations to visible output errors.
Apart from that,
the input and output keep the original model's names and shapes, so every tool that ran the
original runs the repaired file unchanged. The original's layers appear as their exact dense
matrices (verirepair's lowering), which for the usual MLP files are the file's own weights.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...network import Network
from .regions import ReluMlp

OPSET = 13


def _dims(shape: tuple[int, ...]) -> list[int]:
    return [int(d) for d in shape]


def mlp_to_onnx(mlp: ReluMlp, like: Network, metadata: dict[str, object] | None = None) -> onnx.ModelProto:
    if like.input_dtype != np.float32:
        # Only float32 models are produced; a float64 original would lose precision silently.
        raise ValueError(f"repair export supports float32 models, the original uses {like.input_dtype}")
    nodes, inits = [], []

    def const(name: str, array: np.ndarray, dtype=np.float64) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    current = like.input_name
    if len(like.input_shape) != 2:
        nodes.append(helper.make_node("Flatten", [current], ["repair_flat_input"], axis=1))
        current = "repair_flat_input"
    nodes.append(helper.make_node("Cast", [current], ["repair_input64"], to=TensorProto.DOUBLE))
    current = "repair_input64"
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        out = "repair_flat_output" if i == last else f"repair_z{i}"
        nodes.append(helper.make_node("Gemm", [current, const(f"repair_W{i}", w), const(f"repair_B{i}", b)], [out], transB=1))
        current = out
        if i < last:
            nodes.append(helper.make_node("Relu", [out], [f"repair_h{i}"]))
            current = f"repair_h{i}"
    shape = const("repair_output_shape", np.array([-1] + _dims(like.output_shape[1:])), dtype=np.int64)
    nodes.append(helper.make_node("Cast", [current], ["repair_output32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Reshape", ["repair_output32", shape], [like.output_name]))
    graph = helper.make_graph(
        nodes, "verirepair_repaired",
        [helper.make_tensor_value_info(like.input_name, TensorProto.FLOAT, _dims(like.input_shape))],
        [helper.make_tensor_value_info(like.output_name, TensorProto.FLOAT, _dims(like.output_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="verirepair-repair")
    model.ir_version = 8
    if metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = "verirepair.repair", json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(model, full_check=True)
    return model
