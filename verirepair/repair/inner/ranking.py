"""Layer ranking: the layers where the probes see failing inputs most unlike clean ones.

For each layer, the probe's softmax outputs are averaged over a group of clean inputs (``p``) and
over a group of failing inputs (``q``); the layer's score is the cross-entropy
``H(p, q) = -Σ_c p_c log q_c``: large where the failing inputs' features lead the probe to classes
the clean inputs' do not. The highest score ranks first.
"""

from __future__ import annotations

import torch

from ..parameters import TrainableNetwork
from .layers import layer_values
from .probes import Probe

Tensor = torch.Tensor
PROBABILITY_FLOOR = 1e-12  # keeps log q finite where the failing group never reaches a class


def mean_probe_output(module: TrainableNetwork, probe: Probe, x: Tensor) -> Tensor:
    """[classes]: the probe's softmax output averaged over the inputs ``x``."""
    with torch.no_grad():
        return torch.softmax(probe.logits(layer_values(module, probe.layer, x)), dim=1).mean(dim=0)


def layer_scores(module: TrainableNetwork, probes: list[Probe], clean: Tensor, failing: Tensor) -> list[float]:
    """Per probe, ``H(mean clean output, mean failing output)``."""
    scores = []
    for probe in probes:
        p = mean_probe_output(module, probe, clean)
        q = mean_probe_output(module, probe, failing)
        scores.append(float(-(p * q.clamp_min(PROBABILITY_FLOOR).log()).sum()))
    return scores


def ranked_layers(scores: list[float]) -> list[int]:
    """Probe indices, highest score first (ties: earlier layer first)."""
    return sorted(range(len(scores)), key=lambda k: -scores[k])
