"""Fault localisation: the hidden neurons whose behaviour differs most between positive and
negative samples, and the network with those neurons' outputs scaled.

The *behaviour deviation* of a neuron is the gap between its mean output on negative samples and
on positive samples, divided by its standard deviation over all samples (so neurons of different
layers and activation ranges compare). The hidden layers are the network's activations read only
by one dense node (`TrainableNetwork.hidden_layers`): scaling neuron ``j`` of such a layer by
``(1 + r)`` is the same as scaling entry ``j`` of that node's weight along its input axis, so the
repaired network keeps the original graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ...errors import UnsupportedError
from ..parameters import TrainableNetwork

SPREAD_FLOOR = 1e-9  # neurons that are constant over the samples have no deviation to rank


@dataclass(frozen=True)
class Neuron:
    layer: int  # index into `TrainableNetwork.hidden_layers`
    index: int
    deviation: float


def behaviour_deviation(module: TrainableNetwork, positives: torch.Tensor, negatives: torch.Tensor) -> list[torch.Tensor]:
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


def most_deviant(module: TrainableNetwork, positives: torch.Tensor, negatives: torch.Tensor, k: int) -> list[Neuron]:
    """The ``k`` neurons of largest behaviour deviation, largest first."""
    deviations = behaviour_deviation(module, positives, negatives)
    flat = torch.cat(deviations)
    layer_of = torch.cat([torch.full((d.numel(),), l) for l, d in enumerate(deviations)])
    start = torch.cumsum(torch.tensor([0] + [d.numel() for d in deviations]), 0)
    order = torch.argsort(flat, descending=True, stable=True)[:k]
    return [Neuron(int(layer_of[i]), int(i - start[layer_of[i]]), float(flat[i])) for i in order]


# Points per batched network pass of `scaled_outputs`: P particles times N points at once passed
# 10 GB on the MNIST CNN (24 particles, 40,000 points of the backdoor suite's boxes).
POINTS_PER_PASS = 65536


def scaled_outputs(module: TrainableNetwork, neurons: list[Neuron], ratios: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[P, N, m]: outputs on ``x`` with each neuron's output scaled by ``1 + ratios[p, i]`` (as
    many particles per batched pass as `POINTS_PER_PASS` allows, at least one)."""
    per_pass = max(1, POINTS_PER_PASS // max(1, x.shape[0]))
    return torch.cat([_outputs_with_scalings(module, neurons, part, x) for part in ratios.split(per_pass)])


def _outputs_with_scalings(module: TrainableNetwork, neurons: list[Neuron], ratios: torch.Tensor,
                           x: torch.Tensor) -> torch.Tensor:
    particles, count = ratios.shape[0], x.shape[0]
    layers = module.hidden_layers
    factors = [torch.ones(particles, layer.size, dtype=x.dtype) for layer in layers]
    for i, neuron in enumerate(neurons):
        factors[neuron.layer][:, neuron.index] = 1.0 + ratios[:, i].to(x.dtype)
    scale = {layer.value: f.repeat_interleave(count, dim=0) for layer, f in zip(layers, factors)}
    return module(x.repeat(particles, 1), scale).reshape(particles, count, -1)


def with_scaled_neurons(module: TrainableNetwork, neurons: list[Neuron], ratios: torch.Tensor) -> TrainableNetwork:
    """A copy of ``module`` whose next-node weights carry the scalings (same graph)."""
    scaled = copy.deepcopy(module)
    with torch.no_grad():
        for neuron, ratio in zip(neurons, ratios.tolist()):
            layer = module.hidden_layers[neuron.layer]
            scaled.parameter(layer.weight).select(layer.axis, neuron.index).mul_(1.0 + ratio)
    return scaled


def require_hidden_layers(module: TrainableNetwork) -> None:
    if not module.hidden_layers:
        raise UnsupportedError(module.network.path, "network", "BIRDNN fine-tuning needs an activation read only by "
                               "a dense node (Gemm or MatMul with its own weight); this network has none")
