"""A trainable torch copy of a lowered `Chain` (dense affine maps and element-wise activations).

BIRDNN only ever needs forward passes and gradients of the network it repairs, so it works on
the `Chain` that `verirepair.bounds.lower_network` gives for any supported ONNX file: the repaired
network has exactly the original's architecture (same layer sizes, same activations), only other
weights. `chain_of` turns the trained module back into a float64 `Chain` for export.
"""

from __future__ import annotations

import torch

from ...bounds import ActivationLayer, AffineLayer, Chain
from ...errors import UnsupportedError

ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


class ChainModule(torch.nn.Module):
    """``A_k ∘ act_k ∘ … ∘ act_1 ∘ A_0`` with one `torch.nn.Linear` per affine layer.

    ``activations[i]`` is the activation after ``linears[i]`` (None after the last one). A chain
    with max-pool layers or two activations in a row is refused: BIRDNN scales neurons and
    retrains weights of dense layers only.
    """

    def __init__(self, chain: Chain, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        linears: list[torch.nn.Linear] = []
        activations: list[str | None] = []
        for layer in chain.layers:
            if isinstance(layer, AffineLayer):
                if activations and activations[-1] is None and linears:
                    raise UnsupportedError(None, "network", "two affine layers in a row (not a lowered chain)")
                linear = torch.nn.Linear(layer.n_in, layer.n_out, dtype=dtype)
                with torch.no_grad():
                    linear.weight.copy_(layer.weight.to(dtype))
                    linear.bias.copy_(layer.bias.to(dtype))
                linears.append(linear)
                activations.append(None)
            elif isinstance(layer, ActivationLayer):
                if not activations or activations[-1] is not None:
                    raise UnsupportedError(None, "network", "BIRDNN repair needs one activation after each hidden affine layer")
                activations[-1] = layer.kind
            else:
                raise UnsupportedError(None, "network", f"BIRDNN repair does not support {type(layer).__name__} layers yet")
        if activations[-1] is not None:
            raise UnsupportedError(None, "network", "the network ends with an activation, not an affine layer")
        self.linears = torch.nn.ModuleList(linears)
        self.activations = tuple(activations)

    @property
    def hidden_sizes(self) -> list[int]:
        """Neurons after each activation (every layer but the output one)."""
        return [linear.out_features for linear in self.linears[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_hidden(x)[0]

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs and the post-activation values of every hidden layer."""
        hidden: list[torch.Tensor] = []
        for linear, kind in zip(self.linears, self.activations):
            x = linear(x)
            if kind is not None:
                x = ACTIVATIONS[kind](x)
                hidden.append(x)
        return x, hidden

    def state(self) -> list[torch.Tensor]:
        """A detached copy of every parameter (for rollback)."""
        return [p.detach().clone() for p in self.parameters()]

    def load(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.parameters(), state):
                parameter.copy_(value)


def chain_of(module: ChainModule) -> Chain:
    """The module as a float64 `Chain` (the values the exporter writes)."""
    layers: list[AffineLayer | ActivationLayer] = []
    for linear, kind in zip(module.linears, module.activations):
        layers.append(AffineLayer(linear.weight.detach().to(torch.float64).clone(),
                                  linear.bias.detach().to(torch.float64).clone()))
        if kind is not None:
            layers.append(ActivationLayer(kind, linear.out_features))
    return Chain(tuple(layers))
