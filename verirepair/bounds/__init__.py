"""Sound bounds over input boxes on the network's own graph: IBP, CROWN, α-CROWN (float64, batched, any device)."""

from .build import build_graph
from .engine import BoundEngine, LayerBounds, Method, OutputBound, concretize
from .graph import BoundGraph, GraphNode
from .linear import LinearOperator
from .operators import BoundMaxPool, BoundRelu, BoundSShaped

__all__ = ["BoundEngine", "BoundGraph", "BoundMaxPool", "BoundRelu", "BoundSShaped", "GraphNode", "LayerBounds",
           "LinearOperator", "Method", "OutputBound", "build_graph", "concretize"]
