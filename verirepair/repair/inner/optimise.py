"""Masked optimisation: only the fault set's weights change; the architecture stays.

Each step pair first descends ``failing_weight·CE(failing inputs → protected labels) +
distillation_weight·T²·KL(original ∥ network at temperature T)`` (the distillation on a batch of
clean inputs, the cross-entropy on a batch of failing inputs), then the clean inputs' cross-entropy towards the original network's decisions.
After every step the weights outside the fault set are put back to their values, so they never
move whatever the optimiser's state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...verify import Deadline
from ..parameters import TrainableNetwork
from .inputs import LabelledInputs
from .settings import InnerSettings

Tensor = torch.Tensor


def distillation(logits: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T²·KL(softmax(teacher/T) ∥ softmax(logits/T))``, averaged over the batch."""
    return temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                       F.log_softmax(teacher / temperature, dim=1), reduction="batchmean", log_target=True)


def masked_optimisation(module: TrainableNetwork, faults: dict[str, Tensor], kept: dict[str, Tensor],
                        failing: LabelledInputs, clean: Tensor, clean_outputs: Tensor, settings: InnerSettings,
                        budget: Deadline, rng: np.random.Generator) -> int:
    """Train ``module`` in place for `InnerSettings.steps_per_round` step pairs (or until
    ``budget`` ends); ``faults`` maps weight names to the bool masks of their fault sets, and
    ``kept`` to the values outside them. Returns the step pairs run."""
    module.requires_grad_(False)
    weights = [module.parameter(name) for name in faults]
    for weight in weights:
        weight.requires_grad_(True)
    optimiser = torch.optim.Adam(weights, lr=settings.rate_share * float(torch.cat([w.detach().abs().flatten()
                                                                                     for w in weights]).mean()))
    clean_labels = clean_outputs.argmax(dim=1)

    def step(loss: Tensor) -> None:
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for name, weight in zip(faults, weights):
                weight.copy_(torch.where(faults[name], weight, kept[name]))

    done = 0
    for _ in range(settings.steps_per_round):
        if budget.expired():
            break
        batch = torch.from_numpy(rng.choice(len(clean), min(settings.batch_size, len(clean)), replace=False))
        loss = settings.distillation_weight * distillation(module(clean[batch]), clean_outputs[batch], settings.temperature)
        if len(failing):
            wrong = torch.from_numpy(rng.choice(len(failing), min(settings.batch_size, len(failing)), replace=False))
            loss = loss + settings.failing_weight * F.cross_entropy(module(failing.x[wrong]), failing.labels[wrong])
        step(loss)
        step(F.cross_entropy(module(clean[batch]), clean_labels[batch]))
        done += 1
    module.requires_grad_(False)
    return done
