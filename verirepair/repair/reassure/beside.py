"""The patched network as the original ONNX graph with the patch network beside it.

The original model's nodes, initializers and declarations stay as they are, except that the value
that was the graph's output is renamed (`ORIGINAL_OUTPUT`). The patch chain (`patch.patch_mlp`,
written by `export.mlp_to_onnx`) reads the same input, and one Add node writes the sum of the two
under the original output name. Every tool that ran the original runs the repaired file unchanged,
and the original layers keep their own operators (a CNN stays a CNN).
"""

from __future__ import annotations

import onnx

from ...errors import UnsupportedError
from ...network import Network

ORIGINAL_OUTPUT = "repair_original_output"
PATCH_OUTPUT = "repair_patch_output"
# The patch chains' operators (Flatten, Gemm with its bias, MatMul, Relu, Reshape, Add, Sub, Mul) mean the same
# from this opset on, so the original model keeps its own opset.
MIN_OPSET = 7
# Before this IR version every initializer is also declared as a graph input.
INITIALIZERS_AS_INPUTS_BELOW_IR = 4


def _renamed(names: list[str], old: str, new: str) -> list[str]:
    return [new if name == old else name for name in names]


def patched_model(original: onnx.ModelProto, patches: onnx.ModelProto, like: Network) -> onnx.ModelProto:
    """``original`` (the model ``like`` was imported from) plus the patch chain ``patches`` (a model
    on ``like``'s input and output, with its metadata) on its input, summed."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    graph, output = model.graph, like.output_name
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < MIN_OPSET:
        raise UnsupportedError(like.path, "opset", f"patching needs opset {MIN_OPSET} or later, the model has {opset}")
    taken = ({v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer}
             | {v.name for v in graph.value_info})
    added = ({v for n in patches.graph.node for v in n.output} | {i.name for i in patches.graph.initializer}
             | {ORIGINAL_OUTPUT, PATCH_OUTPUT})
    clash = sorted((taken & added) - {output})
    if clash:
        raise UnsupportedError(like.path, "graph", f"value names the patch network needs are taken: {', '.join(clash)}")
    for node in graph.node:
        outputs, inputs = _renamed(list(node.output), output, ORIGINAL_OUTPUT), _renamed(list(node.input), output, ORIGINAL_OUTPUT)
        del node.output[:], node.input[:]
        node.output.extend(outputs)
        node.input.extend(inputs)
    for info in graph.value_info:
        if info.name == output:
            info.name = ORIGINAL_OUTPUT
    for node in patches.graph.node:
        added_node = graph.node.add()
        added_node.CopyFrom(node)
        outputs = _renamed(list(node.output), output, PATCH_OUTPUT)
        del added_node.output[:]
        added_node.output.extend(outputs)
    graph.initializer.extend(patches.graph.initializer)
    if model.ir_version < INITIALIZERS_AS_INPUTS_BELOW_IR:
        graph.input.extend(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                           for init in patches.graph.initializer)
    graph.node.append(onnx.helper.make_node("Add", [ORIGINAL_OUTPUT, PATCH_OUTPUT], [output], name="repair_sum"))
    kept = [entry for entry in model.metadata_props if entry.key not in {e.key for e in patches.metadata_props}]
    del model.metadata_props[:]
    model.metadata_props.extend(kept + list(patches.metadata_props))
    onnx.checker.check_model(model)
    return model
