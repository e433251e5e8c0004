"""Neuron routing: which incoming weights of a layer carry the failing inputs' faulty decisions.

Per failing input, a soft mask ``m`` over the layer's weights (same shape, initialised to 1)
descends ``CE(probe(layer features with weights W⊙m), the probe's current decision) + λ·Σ|m|``
for a fixed number of steps, clipped to [0, 1] after each: weights that the faulty decision needs
resist the L1 pull, the others fall. A weight *routes* an input where its final mask is above
that mask's mean. The fault set is made of the weights that route the most failing inputs (ties:
the larger mean mask first). A unit is ranked by its most routing incoming weight: a fault
planted in one weight makes that unit first, where a sum over a unit's weights would let units
with many weakly routing weights outrank it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..parameters import TrainableNetwork
from .layers import layer_values
from .probes import Probe

Tensor = torch.Tensor
TIE_BREAK = 0.5  # the mean mask (in [0, 1]) weighted below one route, so it only orders equal counts


@dataclass(frozen=True)
class Routing:
    """Per weight of the layer: how many failing inputs it routes, and its mean final mask."""

    counts: Tensor
    mean_mask: Tensor
    unit_axis: int

    @property
    def score(self) -> Tensor:
        return self.counts + TIE_BREAK * self.mean_mask

    def fault_set(self, share: float) -> Tensor:
        """Bool mask of the weights in the fault set: the top ``share`` of the layer's weights."""
        flat = self.score.flatten()
        size = max(1, min(flat.numel(), round(share * flat.numel())))
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[torch.argsort(flat, descending=True, stable=True)[:size]] = True
        return chosen.reshape(self.counts.shape)

    def unit_ranking(self) -> list[int]:
        """The layer's units, the one with the most routing incoming weight first."""
        per_unit = self.score.movedim(self.unit_axis, 0).flatten(1).amax(dim=1)
        return [int(u) for u in torch.argsort(per_unit, descending=True, stable=True)]


def soft_mask(module: TrainableNetwork, probe: Probe, x: Tensor, steps: int, rate: float, l1: float) -> Tensor:
    """The final soft mask of one failing input ``x`` [1, n] (see the module docstring)."""
    weight = module.parameter(probe.layer.weight).detach()
    with torch.no_grad():
        decision = probe.logits(layer_values(module, probe.layer, x)).argmax(dim=1)
    mask = torch.ones_like(weight, requires_grad=True)
    optimiser = torch.optim.Adam([mask], lr=rate)
    for _ in range(steps):
        optimiser.zero_grad()
        logits = probe.logits(layer_values(module, probe.layer, x, weight * mask))
        loss = torch.nn.functional.cross_entropy(logits, decision) + l1 * mask.abs().sum()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)
    return mask.detach()


def route(module: TrainableNetwork, probe: Probe, failing: Tensor, steps: int, rate: float, l1: float) -> Routing:
    """The routing of the layer over the failing inputs (one soft mask each)."""
    weight = module.parameter(probe.layer.weight)
    counts = torch.zeros(weight.shape, dtype=weight.dtype)
    total = torch.zeros(weight.shape, dtype=weight.dtype)
    for x in failing:
        mask = soft_mask(module, probe, x.unsqueeze(0), steps, rate, l1)
        counts += (mask > mask.mean()).to(weight.dtype)
        total += mask
    return Routing(counts, total / max(1, len(failing)), probe.layer.unit_axis)
