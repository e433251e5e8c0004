"""BIRDNN fine-tuning: localise the most responsible neurons, then scale their outputs by factors
``(1 + r)`` that particle swarm optimisation picks; the architecture does not change.

Fitness of a particle ``r`` (lower is better), measured in margin-scale units on a fixed subsample:
the mean shortfall of the negatives' property margin below the target margin, plus the same for
the positives (a positive pushed towards the boundary counts as broken), plus a small penalty on the
output change of the positives and of samples outside the boxes (behaviour to keep). One PSO run scales the top-k neurons; while budget is
left, the candidate is searched for low-margin points, which join the negatives, and another
localisation + PSO round follows on the scaled network.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ...verify import Deadline
from .attack import search_from_weakest
from .common import (
    Phases,
    Session,
)
from .localise import (
    Neuron,
    most_deviant,
    require_hidden_layers,
    scaled_outputs,
    with_scaled_neurons,
)
from .pso import particle_swarm
from .samples import RepairData
from .settings import BirdnnSettings
from .strategy import BirdnnStrategy

OUTPUT_CHANGE_WEIGHT = 0.01  # fitness weight of the positives' output change (behaviour kept)
MAX_ROUNDS = 8  # localisation + PSO rounds per repair call


def fitness_function(module, neurons: list[Neuron], data: RepairData, settings: BirdnnSettings, rng: np.random.Generator):
    """The vectorised PSO objective ([P, k] ratios → [P] values) on a fixed subsample."""
    domain = data.domain
    current = data.property.margin(module(domain.x), domain.member).detach()
    negative = torch.nonzero((domain.margin0 <= 0) | (current < data.target_margin)).flatten()
    positive = torch.nonzero((domain.margin0 > 0) & (current >= data.target_margin)).flatten()
    if len(positive) > settings.finetune_fit_samples:
        positive = positive[torch.from_numpy(rng.choice(len(positive), settings.finetune_fit_samples, replace=False))]
    pos, neg = domain.take(positive), domain.take(negative)
    kept = np.sort(rng.choice(len(data.outside), min(len(data.outside), settings.finetune_fit_samples), replace=False))
    outside = data.outside.take(torch.from_numpy(kept))
    x = torch.cat([neg.x, pos.x, outside.x])
    member = torch.cat([neg.member, pos.member, outside.member])
    n_neg, n_in = len(neg), len(neg) + len(pos)
    outside_scale = data.outside_scale[torch.from_numpy(kept)]

    def objective(ratios: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = scaled_outputs(module, neurons, torch.from_numpy(ratios), x)  # [P, N, m]
            margins = torch.stack([data.property.margin(yp, member) for yp in y])
            shortfall = torch.relu(data.target_margin - margins) / data.scale
            value = shortfall[:, :n_neg].mean(dim=1) if n_neg else torch.zeros(len(ratios), dtype=y.dtype)
            if len(pos):
                value = value + shortfall[:, n_neg:n_in].mean(dim=1)
                change = ((y[:, n_neg:n_in] - pos.y0.to(y.dtype)) / data.scale).pow(2).mean(dim=(1, 2))
                value = value + OUTPUT_CHANGE_WEIGHT * change
            if len(outside):
                change = ((y[:, n_in:] - outside.y0.to(y.dtype)) / outside_scale).pow(2).mean(dim=(1, 2))
                value = value + OUTPUT_CHANGE_WEIGHT * settings.outside_weight * change
        return value.double().numpy()

    return objective, n_neg


def finetune(session: Session, settings: BirdnnSettings, budget: Deadline, phases: Phases) -> dict[str, object]:
    data = session.data
    rng = np.random.default_rng(settings.seed + session.rounds)
    module = session.current
    require_hidden_layers(module)
    rounds: list[dict[str, object]] = []
    satisfied = False
    for round_index in range(MAX_ROUNDS):
        if budget.expired():
            break
        with phases("localise"):
            with torch.no_grad():
                current = data.property.margin(module(data.domain.x), data.domain.member)
            bad = (data.domain.margin0 <= 0) | (current < data.target_margin)
            if not bool(bad.any()):
                neurons: list[Neuron] = []
            else:
                neurons = most_deviant(module, data.domain.x[~bad], data.domain.x[bad], settings.finetune_neurons)
        if neurons:
            with phases("pso"):
                objective, n_neg = fitness_function(module, neurons, data, settings, rng)
                k = len(neurons)
                swarm = replace(settings.swarm, seed=settings.swarm.seed + 101 * session.rounds + round_index)
                result = particle_swarm(objective, np.full(k, -settings.finetune_range), np.full(k, settings.finetune_range),
                                        swarm, start=np.zeros(k), deadline=budget)
                module = with_scaled_neurons(module, neurons, torch.from_numpy(result.best))
            rounds.append({"neurons": [(n.layer, n.index) for n in neurons], "ratios": [round(float(r), 4) for r in result.best],
                           "fitness": result.value, "pso_iterations": result.iterations, "negatives": n_neg})
        with phases("search"):
            with torch.no_grad():
                margins = data.property.margin(module(data.domain.x), data.domain.member)
            if bool((margins < settings.satisfied_fraction * data.target_margin).any()):
                continue
            found = search_from_weakest(module, data, settings, rng, margins)
        if len(found) == 0:
            satisfied = True
            break
        with phases("characterise"):
            data.add_points(found, with_neighbours=False)
    session.current = module
    session.rounds += 1
    with torch.no_grad():
        held_out = data.property.margin(module(data.validation.x), data.validation.member)
        lowest = float(data.property.margin(module(data.domain.x), data.domain.member).min())
    return {"pso_rounds": rounds, "samples_satisfied": satisfied,
            "held_out_property_accuracy": float((held_out > 0).double().mean()),
            "smallest_sample_margin": lowest, "target_margin": data.target_margin}


class BirdnnFinetune(BirdnnStrategy):
    """`RepairStrategy` "birdnn-finetune": neuron scaling found by PSO, architecture unchanged."""

    name = "birdnn-finetune"
    improve = staticmethod(finetune)


def finetune_strategy() -> BirdnnFinetune:
    return BirdnnFinetune()
