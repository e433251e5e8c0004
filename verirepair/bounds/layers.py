"""The lowered form of a network that the bound engine and the MILP encoder work on.

`lower_network` (in `lowering.py`) turns an imported `Network` into a `Chain`: alternating dense
affine maps and element-wise activations over the flattened activation vector. All tensors are
float64 so the final decision is not at the mercy of float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class AffineLayer:
    """``z = weight @ x + bias`` with ``weight`` of shape [out, in]."""

    weight: torch.Tensor
    bias: torch.Tensor

    @cached_property
    def abs_weight(self) -> torch.Tensor:
        """``|weight|``, made once: interval bounds and every rounding budget need it, and a dense
        matrix of a convolution is large."""
        return self.weight.abs()

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class ActivationLayer:
    """Element-wise activation; ``kind`` is one of ``relu``, ``sigmoid``, ``tanh``."""

    kind: str
    size: int


@dataclass(frozen=True)
class MaxPoolLayer:
    """``y[i] = max(x[windows[i, 0]], …, x[windows[i, k-1]])``; ``windows`` is a LongTensor [out, k]."""

    windows: torch.Tensor
    n_in: int

    @property
    def n_out(self) -> int:
        return int(self.windows.shape[0])


Layer = AffineLayer | ActivationLayer | MaxPoolLayer


@dataclass(frozen=True)
class Chain:
    """A sequential network ``A_k ∘ act ∘ … ∘ act ∘ A_0`` over flat float64 vectors.

    Always starts and ends with an `AffineLayer`, never has two affine layers in a row; non-affine
    layers (activations, max-pool) may follow each other (ReLU then MaxPool).
    """

    layers: tuple[Layer, ...]

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in  # type: ignore[union-attr]

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out  # type: ignore[union-attr]

    @property
    def is_piecewise_linear(self) -> bool:
        return all(
            isinstance(l, (AffineLayer, MaxPoolLayer)) or l.kind == "relu" for l in self.layers
        )

    @property
    def is_relu_mlp(self) -> bool:
        """Only affine layers and ReLUs (what the independent certificate checker supports)."""
        return all(isinstance(l, AffineLayer) or (isinstance(l, ActivationLayer) and l.kind == "relu")
                   for l in self.layers)

    def to(self, device: torch.device | str) -> "Chain":
        moved: list[Layer] = []
        for layer in self.layers:
            if isinstance(layer, AffineLayer):
                moved.append(AffineLayer(layer.weight.to(device), layer.bias.to(device)))
            elif isinstance(layer, MaxPoolLayer):
                moved.append(MaxPoolLayer(layer.windows.to(device), layer.n_in))
            else:
                moved.append(layer)
        return Chain(tuple(moved))

    @property
    def has_relu(self) -> bool:
        return any(isinstance(l, ActivationLayer) and l.kind == "relu" for l in self.layers)

    def forward(self, x: torch.Tensor, relu_negative_slope: float = 0.0) -> torch.Tensor:
        """Concrete evaluation on a batch ``x`` of shape [B, n_inputs]. ``relu_negative_slope`` > 0
        evaluates a *different* function, with leaky ReLUs: a surrogate whose gradient does not
        vanish where every ReLU of a layer is off (counterexample search only)."""
        for layer in self.layers:
            if isinstance(layer, AffineLayer):
                x = x @ layer.weight.T + layer.bias
            elif isinstance(layer, MaxPoolLayer):
                x = x[:, layer.windows].amax(dim=-1)
            elif layer.kind == "relu" and relu_negative_slope > 0:
                x = torch.nn.functional.leaky_relu(x, relu_negative_slope)
            else:
                x = ACTIVATIONS[layer.kind](x)
        return x


ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
