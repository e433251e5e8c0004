"""Fine-tuning of the kept cell inside the exported model: the network's own graph with only
the cell's initializers trainable (`TrainableNetwork`), so what is trained is what is exported,
and the verifiability term bounds the very graph the verifier will see."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from ...network import Network
from ...verify import Deadline
from ..birdnn.attack import low_margin_points
from ..parameters import TrainableNetwork
from .export import PREFIX
from .objective import RepairSamples, regions_at_risk, verifiable_shortfall
from .settings import ArchRepairSettings


def cell_module(network: Network, model: onnx.ModelProto) -> TrainableNetwork:
    """``network`` (imported from the spliced ``model``) with only the cell's initializers trainable."""
    module = TrainableNetwork(network, model=model)
    for name, parameter in zip(module.names, module.weights):
        parameter.requires_grad_(name.startswith(PREFIX))
    return module


def finetune(module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings, deadline: Deadline,
             rng: np.random.Generator) -> dict[str, object]:
    """Train the cell's weights for rounds of `finetune_steps` steps; after each, PGD looks for
    failing points of the boxes, which join the samples; stops when a round finds none and (with
    the verifiability term on) the CROWN bound of every box has reached its target, or when the
    time is up. A box whose bound is still short is where the verifier would have to split, so
    rounds go on for it even when PGD finds nothing."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=settings.weight_rate)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    rounds = found = 0
    with torch.no_grad():
        shortfall = float(verifiable_shortfall(module, samples, settings))
    while not deadline.expired():
        rounds += 1
        at_risk = regions_at_risk(module, samples, settings) if settings.verifiable_weight > 0 else []
        for _ in range(settings.finetune_steps):
            if deadline.expired():
                break
            optimiser.zero_grad()
            loss = samples.loss(module, "train", generator)
            if at_risk:
                loss = loss + settings.verifiable_weight * verifiable_shortfall(module, samples, settings, at_risk)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            seeds = samples.box_x[torch.argsort(samples.margins(module))[:settings.attack_starts]]
        points = low_margin_points(module, samples.property, seeds, settings.attack_starts, settings.attack_steps, 0.0, rng)
        added = samples.add(points) if len(points) else 0
        found += added
        samples.mark_failing(module)
        with torch.no_grad():
            shortfall = float(verifiable_shortfall(module, samples, settings))
        if added == 0 and (settings.verifiable_weight == 0 or shortfall == 0):
            break
    return {"finetune_rounds": rounds, "pgd_points_added": found, "verifiable_shortfall": shortfall}
