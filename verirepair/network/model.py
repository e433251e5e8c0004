"""The `Network` type: an imported ONNX graph as a list of torch operations.

Every tensor carries a leading batch dimension at run time: the ONNX input shape's first
dimension (1 or symbolic in the benchmark files) is replaced by the batch size, so the same graph
evaluates many points at once. Public entry points take and return *flat* vectors
([batch, n_inputs] → [batch, n_outputs]); the reshaping to the ONNX shape happens here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

Operation = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Node:
    """One ONNX node converted to a torch callable taking its input tensors in order."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]
    operation: Operation


@dataclass
class Network:
    """A single-input, single-output network imported from ONNX (see `onnx_import.load_network`)."""

    path: Path | None
    input_name: str
    input_shape: tuple[int, ...]  # ONNX shape, batch dimension included (first entry)
    output_name: str
    output_shape: tuple[int, ...]
    input_dtype: np.dtype
    nodes: list[Node]
    constants: dict[str, torch.Tensor]  # what the nodes read: initialisers, folded values (float64 / int64)
    _cast_cache: dict[tuple[torch.dtype, str], dict[str, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape[1:])

    @property
    def n_outputs(self) -> int:
        return math.prod(self.output_shape[1:])

    @property
    def op_types(self) -> list[str]:
        return [node.op_type for node in self.nodes]

    def constants_as(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """Floating constants cast to ``dtype`` on ``device`` (integer ones, e.g. shapes, kept)."""
        key = (dtype, str(device))
        if key not in self._cast_cache:
            self._cast_cache[key] = {
                name: (t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device))
                for name, t in self.constants.items()
            }
        return self._cast_cache[key]

    def with_constants(self, constants: dict[str, torch.Tensor]) -> "Network":
        """The same graph over other constant tensors (e.g. trainable copies of the weights)."""
        return Network(self.path, self.input_name, self.input_shape, self.output_name, self.output_shape,
                       self.input_dtype, self.nodes, constants)

    def run_nodes(self, nodes: list[Node], values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Evaluate ``nodes`` in order; ``values`` maps value names to tensors (updated copy returned)."""
        values = dict(values)
        for node in nodes:
            args = [values[name] if name else None for name in node.inputs]
            result = node.operation(*args)
            outputs = result if isinstance(result, tuple) else (result,)
            values.update(zip(node.outputs, outputs))
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [batch, n_outputs] for flat inputs ``x`` [batch, n_inputs] (dtype of ``x``)."""
        batch = x.shape[0]
        shaped = x.reshape((batch,) + tuple(self.input_shape[1:]))
        values = dict(self.constants_as(x.dtype, x.device))
        values[self.input_name] = shaped
        values = self.run_nodes(self.nodes, values)
        return values[self.output_name].reshape(batch, -1)
