"""Fault localisation: the hidden neurons whose behaviour differs most between positive and
negative samples, and the network with those neurons' outputs scaled.

The *behaviour deviation* of a neuron is the gap between its mean output on negative samples and
on positive samples, divided by its standard deviation over all samples (so neurons of different
layers and activation ranges compare). Scaling neuron ``j`` of hidden layer ``l`` by ``(1 + r)`` is
the same as scaling column ``j`` of the next affine layer's weight, so the repaired network keeps
the original architecture.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .mlp import ACTIVATIONS, ChainModule

SPREAD_FLOOR = 1e-9  # neurons that are constant over the samples have no deviation to rank


@dataclass(frozen=True)
class Neuron:
    layer: int  # hidden layer index (0 = after the first affine layer)
    index: int
    deviation: float


def behaviour_deviation(module: ChainModule, positives: torch.Tensor, negatives: torch.Tensor) -> list[torch.Tensor]:
    """Per hidden layer, [n_l]: |mean on negatives − mean on positives| / std over both."""
    with torch.no_grad():
        _, hidden_pos = module.forward_with_hidden(positives)
        _, hidden_neg = module.forward_with_hidden(negatives)
    deviations = []
    for pos, neg in zip(hidden_pos, hidden_neg):
        spread = torch.cat([pos, neg]).std(dim=0)
        gap = (neg.mean(dim=0) - pos.mean(dim=0)).abs()
        deviations.append(torch.where(spread > SPREAD_FLOOR, gap / spread.clamp_min(SPREAD_FLOOR), torch.zeros_like(gap)))
    return deviations


def most_deviant(module: ChainModule, positives: torch.Tensor, negatives: torch.Tensor, k: int) -> list[Neuron]:
    """The ``k`` neurons of largest behaviour deviation, largest first."""
    deviations = behaviour_deviation(module, positives, negatives)
    flat = torch.cat(deviations)
    layer_of = torch.cat([torch.full((d.numel(),), l) for l, d in enumerate(deviations)])
    start = torch.cumsum(torch.tensor([0] + [d.numel() for d in deviations]), 0)
    order = torch.argsort(flat, descending=True, stable=True)[:k]
    return [Neuron(int(layer_of[i]), int(i - start[layer_of[i]]), float(flat[i])) for i in order]


def scaled_outputs(module: ChainModule, neurons: list[Neuron], ratios: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[P, N, m]: outputs on ``x`` with each neuron's output scaled by ``1 + ratios[p, i]``.

    The layers before the first scaled neuron are evaluated once for all particles.
    """
    n_hidden = len(module.hidden_sizes)
    factors = [torch.ones(ratios.shape[0], size, dtype=x.dtype) for size in module.hidden_sizes]
    for i, neuron in enumerate(neurons):
        factors[neuron.layer][:, neuron.index] = 1.0 + ratios[:, i].to(x.dtype)
    first = min((n.layer for n in neurons), default=n_hidden)
    h = x
    for l in range(first + 1):
        h = ACTIVATIONS[module.activations[l]](module.linears[l](h)) if l < n_hidden else module.linears[l](h)
    if first >= n_hidden:
        return h.unsqueeze(0).expand(ratios.shape[0], -1, -1)
    h = h.unsqueeze(0) * factors[first].unsqueeze(1)
    for l in range(first + 1, len(module.linears)):
        h = module.linears[l](h)
        if l < n_hidden:
            h = ACTIVATIONS[module.activations[l]](h) * factors[l].unsqueeze(1)
    return h


def with_scaled_neurons(module: ChainModule, neurons: list[Neuron], ratios: torch.Tensor) -> ChainModule:
    """A copy of ``module`` whose next-layer weight columns carry the scalings (same architecture)."""
    scaled = copy.deepcopy(module)
    with torch.no_grad():
        for neuron, ratio in zip(neurons, ratios.tolist()):
            scaled.linears[neuron.layer + 1].weight[:, neuron.index] *= 1.0 + ratio
    return scaled
