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


class _Rounds:
    """Rounds of training steps on the cell's weights, each followed by the checks of its goals."""

    def __init__(self, module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings,
                 deadline: Deadline, rng: np.random.Generator) -> None:
        self.module, self.samples, self.settings, self.deadline, self.rng = module, samples, settings, deadline, rng
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(self.trainable, lr=settings.weight_rate)
        self.generator = torch.Generator().manual_seed(settings.seed + 1)
        self.found = 0

    def train(self, steps: int, label_weight: float | None = None) -> bool:
        """``steps`` steps (the verifiability term on the boxes at risk at the start); False when
        the time ran out first."""
        settings, samples = self.settings, self.samples
        at_risk = regions_at_risk(self.module, samples, settings) if settings.verifiable_weight > 0 else []
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

    def goals_met(self) -> tuple[bool, float]:
        """(whether PGD found no failing point and, with the verifiability term, every box's bound
        reached its target, the verifiability shortfall); the points PGD found join the samples."""
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
        return added == 0 and (settings.verifiable_weight == 0 or shortfall == 0), shortfall

    def state(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.trainable]

    def restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.trainable, state):
                parameter.copy_(value)


def finetune(module: TrainableNetwork, samples: RepairSamples, settings: ArchRepairSettings, deadline: Deadline,
             rng: np.random.Generator) -> dict[str, object]:
    """Train the cell's weights for rounds of `finetune_steps` steps; after each, PGD looks for
    failing points of the boxes, which join the samples; stops when a round finds none and (with
    the verifiability term on) the CROWN bound of every box has reached its target, or when the
    time is up. A box whose bound is still short is where the verifier would have to split, so
    rounds go on for it even when PGD finds nothing. Then the accuracy phase (`accuracy_phase`)."""
    rounds = _Rounds(module, samples, settings, deadline, rng)
    count, met = 0, False
    with torch.no_grad():
        shortfall = float(verifiable_shortfall(module, samples, settings))
    while not deadline.expired():
        count += 1
        rounds.train(settings.finetune_steps)
        met, shortfall = rounds.goals_met()
        if met:
            break
    details: dict[str, object] = {"finetune_rounds": count, "verifiable_shortfall": shortfall}
    if met:
        details |= accuracy_phase(rounds)
    details["pgd_points_added"] = rounds.found
    return details


def accuracy_phase(rounds: _Rounds) -> dict[str, object]:
    """Weights that met the fine-tuning's goals train on towards the keep inputs' labels
    (`ArchRepairSettings.accuracy_label_weight`); a round's weights replace them only when they
    meet the goals again and do not lower the validation accuracy. The first round that falls
    short (or runs out of time) ends the phase, and the weights kept last stay."""
    samples, settings = rounds.samples, rounds.settings
    kept = samples.validation_accuracy(rounds.module)
    if kept is None or settings.accuracy_rounds == 0:
        return {}
    details: dict[str, object] = {"validation_accuracy_before_phase": kept, "accuracy_rounds_kept": 0}
    state, kept_rounds = rounds.state(), 0
    for _ in range(settings.accuracy_rounds):
        finished = rounds.train(settings.accuracy_steps, settings.accuracy_label_weight)
        met, _ = rounds.goals_met() if finished else (False, 0.0)
        accuracy = samples.validation_accuracy(rounds.module)
        assert accuracy is not None
        if not met or accuracy < kept:
            details["accuracy_phase_ended"] = ("time" if not finished else "goals" if not met else
                                               f"validation accuracy {accuracy:.4f}")
            break
        kept, state = accuracy, rounds.state()
        details["accuracy_rounds_kept"] = kept_rounds = kept_rounds + 1
    rounds.restore(state)
    details["validation_accuracy"] = kept
    return details
