"""Small deterministic ONNX networks for the repair tests: dense chains of any activation and a
CNN (Conv, ReLU, MaxPool, Flatten, Gemm), float32 weights from a seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx_factory import build_model

ONNX_ACTIVATION = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def dense_chain(sizes: list[int], activation: str, seed: int, scale: float = 1.5) -> onnx.ModelProto:
    """``Gemm → act → … → act → Gemm`` on [1, sizes[0]] with weights ~ N(0, scale²/fan_in)."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            nodes.append(helper.make_node(ONNX_ACTIVATION[activation], [current], [f"h{k}"]))
            current = f"h{k}"
        inits += [numpy_helper.from_array((rng.normal(size=(b, a)) * scale / np.sqrt(a)).astype(np.float32), f"W{k}"),
                  numpy_helper.from_array((0.3 * rng.normal(size=b)).astype(np.float32), f"b{k}")]
        out = "y" if k == len(sizes) - 2 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [out], transB=1))
        current = out
    return build_model(nodes, [("x", [1, sizes[0]])], [("y", [1, sizes[-1]])], inits)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """[1, 1, 6, 6] → Conv(2, 3×3, pad 1) → ReLU → Conv(2, 3×3, pad 1) → ReLU → MaxPool(2×2) →
    Flatten → Gemm(8) → ReLU → Gemm(2)."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=shape) * 1.5 / np.sqrt(fan_in)).astype(np.float32), name)

    inits = [tensor("conv1.weight", 2, 1, 3, 3, fan_in=9), tensor("conv1.bias", 2, fan_in=9),
             tensor("conv2.weight", 2, 2, 3, 3, fan_in=18), tensor("conv2.bias", 2, fan_in=18),
             tensor("fc1.weight", 8, 18, fan_in=18), tensor("fc1.bias", 8, fan_in=18),
             tensor("fc2.weight", 2, 8, fan_in=8), tensor("fc2.bias", 2, fan_in=8)]
    nodes = [helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["d1"], transB=1, name="fc1"),
             helper.make_node("Relu", ["d1"], ["r3"], name="relu3"),
             helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["y"], transB=1, name="fc2")]
    return build_model(nodes, [("x", [1, 1, 6, 6])], [("y", [1, 2])], inits)


def architecture(model: onnx.ModelProto) -> tuple[object, ...]:
    """Everything but the initializers' values: nodes (op type, inputs, outputs, attributes),
    declared inputs and outputs, initializer names, element types and shapes, opsets."""
    graph = model.graph
    return (tuple((n.op_type, tuple(n.input), tuple(n.output), tuple(a.SerializeToString() for a in n.attribute))
                  for n in graph.node),
            tuple(v.SerializeToString() for v in graph.input), tuple(v.SerializeToString() for v in graph.output),
            tuple((i.name, i.data_type, tuple(i.dims)) for i in graph.initializer),
            tuple((o.domain, o.version) for o in model.opset_import),
            Counter(n.op_type for n in graph.node))
