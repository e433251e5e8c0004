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
from .objective import (
    RepairSamples,
    crown_margins,
    regions_at_risk,
    verifiable_shortfall,
)
from .settings import ArchRepairSettings


def cell_module(network: Network, model: onnx.ModelProto) -> TrainableNetwork:
    """``network`` (imported from the spliced ``model``) with only the cell's initializers trainable."""
    module = TrainableNetwork(network, model=model)
    for name, parameter in zip(module.names, module.weights):
        parameter.requires_grad_(name.startswith(PREFIX))
    return module


class _Rounds:
    """Rounds of training steps on the cell's weights, each followed by the checks of its goals."""

    def __init__(self, module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings,
                 deadline: Deadline, rng: np.random.Generator, rate: float | None = None) -> None:
        self.module, self.samples, self.settings, self.deadline, self.rng = module, samples, settings, deadline, rng
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(self.trainable, lr=settings.weight_rate if rate is None else rate)
        self.generator = torch.Generator().manual_seed(settings.seed + 1)
        self.found = 0

    def train(self, steps: int, label_weight: float | None = None, verifiable: bool = True) -> bool:
        """``steps`` steps (with ``verifiable``, the verifiability term on the boxes at risk at the
        start); False when the time ran out first."""
        settings, samples = self.settings, self.samples
        at_risk = regions_at_risk(self.module, samples, settings) if verifiable and settings.verifiable_weight > 0 else []
        for _ in range(steps):
            if self.deadline.expired():
                return False
            self.optimiser.zero_grad()
            loss = samples.loss(self.module, "train", self.generator, label_weight)
            if at_risk:
                loss = loss + settings.verifiable_weight * verifiable_shortfall(self.module, samples, settings, at_risk)
            loss.backward()
            self.optimiser.step()
        return True

    def goals_met(self, floor: torch.Tensor | None = None) -> tuple[bool, float]:
        """(whether PGD found no failing point and, with the verifiability term, every box's bound
        reached its target (with ``floor``: its entry of ``floor`` instead), the verifiability
        shortfall); the points PGD found join the samples."""
        samples, settings = self.samples, self.settings
        with torch.no_grad():
            seeds = samples.box_x[torch.argsort(samples.margins(self.module))[:settings.attack_starts]]
        points = low_margin_points(self.module, samples.property, seeds, settings.attack_starts, settings.attack_steps,
                                   0.0, self.rng)
        added = samples.add(points) if len(points) else 0
        self.found += added
        samples.mark_failing(self.module)
        with torch.no_grad():
            shortfall = float(verifiable_shortfall(self.module, samples, settings))
            bounded = (shortfall == 0 if floor is None else
                       bool((crown_margins(self.module, samples.verified.regions) >= floor).all()))
        return added == 0 and (settings.verifiable_weight == 0 or bounded), shortfall

    def state(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.trainable]

    def restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.trainable, state):
                parameter.copy_(value)


def finetune(module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings, deadline: Deadline,
             rng: np.random.Generator, label_steps: int = 0) -> dict[str, object]:
    """First ``label_steps`` steps without the verifiability term (no bound to compute, so cheap
    steps in which labelled keep inputs raise accuracy; the box hinge stays on). Then train the
    cell's weights for rounds of `finetune_steps` steps; after each, PGD looks for failing points
    of the boxes, which join the samples; stops when a round finds none and (with
    the verifiability term on) the CROWN bound of every box has reached its target, or when the
    time is up. A box whose bound is still short is where the verifier would have to split, so
    rounds go on for it even when PGD finds nothing."""
    rounds = _Rounds(module, samples, settings, deadline, rng)
    rounds.train(label_steps, verifiable=False)
    count = 0
    with torch.no_grad():
        shortfall = float(verifiable_shortfall(module, samples, settings))
    while not deadline.expired():
        count += 1
        rounds.train(settings.finetune_steps)
        met, shortfall = rounds.goals_met()
        if met:
            break
    return {"finetune_rounds": count, "pgd_points_added": rounds.found, "verifiable_shortfall": shortfall}


def accuracy_rounds(module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings, deadline: Deadline,
                    rng: np.random.Generator) -> dict[str, object]:
    """The accuracy phase on proven weights (those ``module`` holds): rounds of
    `ArchRepairSettings.accuracy_steps` steps towards the keep inputs' labels at
    `ArchRepairSettings.accuracy_label_weight` (the verifiability term and the box hinge still
    on). A round's weights meet the goals when PGD finds no failing point and no box's CROWN bound
    lies below the lower of its bound on the proven weights and 0. ``module`` is left with the
    most accurate weights on the validation split among the proven ones and those that met the
    goals (the latest on ties). Returns the validation accuracy of the proven weights and of those
    left, how many rounds ran and met the goals, and which round's weights were left (0: the proven)."""
    rounds = _Rounds(module, samples, settings, deadline, rng, settings.accuracy_rate)
    with torch.no_grad():
        floor = torch.clamp(crown_margins(module, samples.verified.regions), max=0.0)
    proven = kept = samples.validation_accuracy(module)
    assert proven is not None, "the accuracy phase needs a validation split"
    state, kept_round, count, met_rounds = rounds.state(), 0, 0, 0
    for count in range(1, settings.accuracy_rounds + 1):
        if not rounds.train(settings.accuracy_steps, settings.accuracy_label_weight):
            break
        if not rounds.goals_met(floor)[0]:
            continue
        met_rounds += 1
        accuracy = samples.validation_accuracy(module)
        assert accuracy is not None
        if accuracy >= kept:
            kept, state, kept_round = accuracy, rounds.state(), count
    rounds.restore(state)
    return {"validation_accuracy_proven": proven, "validation_accuracy": kept, "accuracy_rounds_run": count,
            "accuracy_rounds_meeting_goals": met_rounds, "accuracy_round_kept": kept_round}
