"""The patched network as the original ONNX graph with the patch network beside it.

The original model's nodes, initializers and declarations stay as they are, except that the value
that was the graph's output is renamed (`ORIGINAL_OUTPUT`). The patch chain (`patch.patch_mlp`,
written by `export.mlp_to_onnx`) reads the same input, and one Add node writes the sum of the two
under the original output name. Every tool that ran the original runs the repaired file unchanged,
and the original layers keep their own operators (a CNN stays a CNN).

A name the patch chain or the sum needs that the original already uses (an already patched file
being patched again) gets a numbered suffix, so patches can be stacked.
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


def _fresh(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... where it is taken; the result is added to ``taken``."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    taken.add(candidate)
    return candidate


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
             | {v.name for v in graph.value_info} | {n.name for n in graph.node} | {v.name for v in graph.input}
             | {v.name for v in graph.output})
    original_output, patch_output, sum_name = (_fresh(name, taken) for name in (ORIGINAL_OUTPUT, PATCH_OUTPUT, "repair_sum"))
    fresh = {name: _fresh(name, taken) for name in
             ({v for n in patches.graph.node for v in n.output} | {i.name for i in patches.graph.initializer}
              | {n.name for n in patches.graph.node if n.name}) - {output, like.input_name}}
    fresh[output] = patch_output
    for node in graph.node:
        outputs, inputs = _renamed(list(node.output), output, original_output), _renamed(list(node.input), output, original_output)
        del node.output[:], node.input[:]
        node.output.extend(outputs)
        node.input.extend(inputs)
    for info in graph.value_info:
        if info.name == output:
            info.name = original_output
    for node in patches.graph.node:
        added_node = graph.node.add()
        added_node.CopyFrom(node)
        for names in (added_node.input, added_node.output):
            renamed = [fresh.get(name, name) for name in names]
            del names[:]
            names.extend(renamed)
        if node.name:
            added_node.name = fresh[node.name]
    for init in patches.graph.initializer:
        added_init = graph.initializer.add()
        added_init.CopyFrom(init)
        added_init.name = fresh[init.name]
    if model.ir_version < INITIALIZERS_AS_INPUTS_BELOW_IR:
        graph.input.extend(onnx.helper.make_tensor_value_info(fresh[init.name], init.data_type, list(init.dims))
                           for init in patches.graph.initializer)
    graph.node.append(onnx.helper.make_node("Add", [original_output, patch_output], [output], name=sum_name))
    kept = [entry for entry in model.metadata_props if entry.key not in {e.key for e in patches.metadata_props}]
    del model.metadata_props[:]
    model.metadata_props.extend(kept + list(patches.metadata_props))
    onnx.checker.check_model(model)
    return model
