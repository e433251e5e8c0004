"""The searched block spliced into the original ONNX model in place of the old one.

The old block's nodes (found by the values they make) and the initializers only they read are
removed; the cell's nodes read the block's source value and make its target value, so every
node, value and initializer outside the block stays as it was. The new initializers take the
floating type of the old block's weights.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...network import Network
from .blocks import Block
from .search import DiscreteCell

PREFIX = "archrepair/"
"""Start of every node, value and initializer name the cell adds."""


def spliced_model(model: onnx.ModelProto, network: Network, block: Block, cell: DiscreteCell) -> onnx.ModelProto:
    spliced = copy.deepcopy(model)
    graph = spliced.graph
    made = {name for node in block.nodes(network) for name in node.outputs}
    old = [k for k, node in enumerate(graph.node) if set(node.output) & made]
    removed = [graph.node[k] for k in old]
    kept = [node for k, node in enumerate(graph.node) if k not in set(old)]
    still_read = {name for node in kept for name in node.input}
    dropped = {name for node in removed for name in node.input} - still_read
    types = [init.data_type for init in graph.initializer if init.name in dropped
             and np.issubdtype(helper.tensor_dtype_to_np_dtype(init.data_type), np.floating)]
    dtype = helper.tensor_dtype_to_np_dtype(types[0]) if types else np.float32
    nodes, initializers = cell.onnx_nodes(PREFIX, block.source, block.target)
    position = old[0] if old else len(kept)
    del graph.node[:]
    graph.node.extend(kept[:position] + nodes + kept[position:])
    keep_inits = [init for init in graph.initializer if init.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits + [numpy_helper.from_array(numpy_helper.to_array(i).astype(dtype), i.name)
                                           for i in initializers])
    stale = {name for node in removed for name in node.output} - {block.target}
    infos = [info for info in graph.value_info if info.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    onnx.checker.check_model(spliced)
    return spliced
