"""INNER's fault localisation: probes on every layer, the layer ranking, then neuron routing on
the top-ranked layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import UnsupportedError
from ..parameters import TrainableNetwork
from .layers import Layer, repairable_layers
from .probes import train_probes
from .ranking import layer_scores, ranked_layers
from .routing import Routing, route
from .settings import InnerSettings

Tensor = torch.Tensor


@dataclass(frozen=True)
class Localisation:
    layers: tuple[Layer, ...]  # every repairable layer, in graph order
    scores: list[float]  # per layer, the ranking score
    order: list[int]  # layer indices, highest score first
    routings: dict[int, Routing]  # per repaired layer (the top `InnerSettings.repair_layers`)

    def fault_sets(self, share: float) -> dict[str, Tensor]:
        """Weight name → bool mask of its fault set, for every repaired layer."""
        return {self.layers[k].weight: routing.fault_set(share) for k, routing in self.routings.items()}


def _subsample(x: Tensor, count: int, rng: np.random.Generator) -> Tensor:
    return x[torch.from_numpy(np.sort(rng.permutation(len(x))[:count]))]


def clean_like(clean: Tensor, clean_labels: Tensor, labels: Tensor, rng: np.random.Generator) -> Tensor:
    """One clean input per entry of ``labels``, drawn among the clean inputs with that label (any
    clean input where none has it).

    INNER compares failing inputs with clean inputs drawn at random. Failing inputs of a property
    share few labels (a robustness box has one), so a random clean group would differ from them in
    its mix of classes at every layer, and the ranking would measure that mix instead of the fault:
    drawn with the failing inputs' labels, the groups differ only where the network goes wrong."""
    chosen = []
    for label in labels.tolist():
        pool = torch.nonzero(clean_labels == label).flatten()
        pool = pool if len(pool) else torch.arange(len(clean))
        chosen.append(int(pool[rng.integers(len(pool))]))
    return clean[torch.tensor(chosen, dtype=torch.long)]


def localise(module: TrainableNetwork, clean: Tensor, clean_labels: Tensor, failing: Tensor, failing_labels: Tensor,
             classes: int, settings: InnerSettings, rng: np.random.Generator) -> Localisation:
    """Probes trained on ``clean`` (labelled ``clean_labels``), layers ranked on a subsample of
    the ``failing`` inputs (which should get ``failing_labels``) and as many clean inputs of the
    same labels (`clean_like`), and the top layers routed over failing inputs."""
    layers = repairable_layers(module)
    if not layers:
        raise UnsupportedError(module.network.path, "network", "INNER needs a hidden activation fed by a dense or "
                               "convolution node with its own weight; this network has none")
    probes = train_probes(module, layers, clean, clean_labels, classes, settings.probe_epochs, settings.probe_rate,
                          settings.seed)
    ranked = torch.from_numpy(np.sort(rng.permutation(len(failing))[:settings.ranking_inputs]))
    scores = layer_scores(module, probes, clean_like(clean, clean_labels, failing_labels[ranked], rng), failing[ranked])
    order = ranked_layers(scores)
    routed = _subsample(failing, settings.routing_inputs, rng)
    routings = {k: route(module, probes[k], routed, settings.routing_steps, settings.routing_rate, settings.routing_l1)
                for k in order[:settings.repair_layers]}
    return Localisation(layers, scores, order, routings)
