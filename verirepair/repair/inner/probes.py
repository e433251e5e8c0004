"""Linear probes: per layer, a linear classifier on the layer's features, trained on clean inputs
with the network frozen.

INNER trains its probes on the training set's true labels. verirepair's clean inputs are the
`--data` set's inputs and samples of the property's boxes, without labels, so the probes learn
the *original network's* decisions there: the behaviour the repair keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..parameters import TrainableNetwork
from .layers import Layer, features, layer_values

Tensor = torch.Tensor
# A feature whose spread over the clean inputs is below this is constant there: the probe cannot
# learn what it means, so it reads it as 0 (scaling it by 1/spread would blow up any change).
STD_FLOOR = 1e-6


@dataclass
class Probe:
    """A layer's linear classifier over its standardised features."""

    layer: Layer
    mean: Tensor
    scale: Tensor  # 1/std per feature, 0 for features constant on the clean inputs
    linear: torch.nn.Linear

    def logits(self, activations: Tensor) -> Tensor:
        """[B, classes] from the layer's activation values (differentiable in them)."""
        return self.linear((features(activations) - self.mean) * self.scale)


def train_probe(module: TrainableNetwork, layer: Layer, x: Tensor, labels: Tensor, classes: int, epochs: int,
                rate: float, seed: int) -> Probe:
    """A probe of ``layer`` fitted to ``labels`` on inputs ``x`` (full-batch Adam, cross-entropy)."""
    with torch.no_grad():
        seen = features(layer_values(module, layer, x))
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(seen.shape[1], classes, dtype=seen.dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator, dtype=seen.dtype) * 0.01)
        linear.bias.zero_()
    spread = seen.std(dim=0)
    scale = torch.where(spread > STD_FLOOR, 1.0 / spread.clamp_min(STD_FLOOR), torch.zeros_like(spread))
    probe = Probe(layer, seen.mean(dim=0), scale, linear)
    standardised = (seen - probe.mean) * probe.scale
    optimiser = torch.optim.Adam(linear.parameters(), lr=rate)
    for _ in range(epochs):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(linear(standardised), labels).backward()
        optimiser.step()
    linear.requires_grad_(False)
    return probe


def train_probes(module: TrainableNetwork, layers: tuple[Layer, ...], x: Tensor, labels: Tensor, classes: int,
                 epochs: int, rate: float, seed: int) -> list[Probe]:
    return [train_probe(module, layer, x, labels, classes, epochs, rate, seed + k) for k, layer in enumerate(layers)]
