"""Masked optimisation: only the fault set's weights change; the architecture stays.

*Repair steps* (`masked_optimisation`), as in INNER: each step pair first descends
``failing_weight·CE(failing inputs → protected labels) + distillation_weight·T²·KL(original ∥
network at temperature T)`` (the distillation on a batch of clean inputs, the cross-entropy on a
batch of failing inputs), then the clean inputs' cross-entropy towards the original network's
decisions.

*Recovery steps* (`margin_preserving_recovery`), which INNER does not have: once no failing input
is left below the target margin, the same fault weights descend the clean terms (distillation and
the original decisions) plus a hinge that holds every failing input's margin at the target. The
repair steps' cross-entropy keeps pulling failing inputs long after they are safe, and every unit
of margin beyond the target is paid for in clean behaviour; the hinge asks for the target and no
more, so the clean terms take back what the failing inputs do not need.

*Verifiability* (not in INNER either; on after the verifier could not decide a candidate): both
kinds of steps add ``verifiable_weight·mean(relu(verifiable_target − CROWN lower bound of the
property margin on each region's whole box))``, the certified term of `birdnn-retrain`
(`birdnn.certified`). Samples only lift the margin where they are; a verifier that cannot decide
needs the margin's bound over the box lifted, which is what this term does.

After every step the weights outside the fault set are put back to their values, so they never
move whatever the optimiser's state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...verify import Deadline
from ..birdnn.certified import whole_box_margins
from ..birdnn.domain import RegionTensors
from ..parameters import TrainableNetwork
from .inputs import CleanInputs, LabelledInputs
from .settings import InnerSettings

Tensor = torch.Tensor


def distillation(logits: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T²·KL(softmax(teacher/T) ∥ softmax(logits/T))``, averaged over the batch."""
    return temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                       F.log_softmax(teacher / temperature, dim=1), reduction="batchmean", log_target=True)


def label_margins(outputs: Tensor, labels: Tensor) -> Tensor:
    """[N]: each row's logit of its label minus its largest other logit (> 0: the label wins)."""
    right = outputs.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = outputs.scatter(1, labels.unsqueeze(1), -torch.inf).amax(dim=1)
    return right - others


def verifiability_shortfall(module: TrainableNetwork, regions: list[RegionTensors], target: float) -> Tensor:
    """Mean hinge of the regions' whole-box CROWN margin bounds below ``target``."""
    return torch.relu(target - whole_box_margins(module, regions)).mean()


class MaskedSteps:
    """Adam on the fault set's weights of ``module``; after each step every weight outside the
    fault set is put back to its kept value."""

    def __init__(self, module: TrainableNetwork, faults: dict[str, Tensor], kept: dict[str, Tensor], rate_share: float) -> None:
        module.requires_grad_(False)
        self.module, self.faults, self.kept = module, faults, kept
        self.weights = [module.parameter(name) for name in faults]
        for weight in self.weights:
            weight.requires_grad_(True)
        scale = float(torch.cat([w.detach().abs().flatten() for w in self.weights]).mean())
        self.optimiser = torch.optim.Adam(self.weights, lr=rate_share * scale)

    def step(self, loss: Tensor) -> None:
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        with torch.no_grad():
            for name, weight in zip(self.faults, self.weights):
                weight.copy_(torch.where(self.faults[name], weight, self.kept[name]))

    def close(self) -> None:
        self.module.requires_grad_(False)


def _failing_batch(failing: LabelledInputs, size: int, rng: np.random.Generator) -> Tensor:
    return torch.from_numpy(rng.choice(len(failing), min(size, len(failing)), replace=False))


def masked_optimisation(module: TrainableNetwork, faults: dict[str, Tensor], kept: dict[str, Tensor],
                        failing: LabelledInputs, clean: CleanInputs, settings: InnerSettings, budget: Deadline,
                        rng: np.random.Generator, verifiable: list[RegionTensors] | None = None) -> int:
    """Train ``module`` in place for `InnerSettings.steps_per_round` repair step pairs (or until
    ``budget`` ends); ``faults`` maps weight names to the bool masks of their fault sets, and
    ``kept`` to the values outside them; ``verifiable``: the regions whose whole-box bounds the
    verifiability term lifts (None: off). Returns the step pairs run."""
    steps = MaskedSteps(module, faults, kept, settings.rate_share)
    done = 0
    for _ in range(settings.steps_per_round):
        if budget.expired():
            break
        batch = clean.batch(settings.batch_size, settings.data_share, rng)
        loss = settings.distillation_weight * distillation(module(clean.x[batch]), clean.outputs[batch], settings.temperature)
        if len(failing):
            wrong = _failing_batch(failing, settings.batch_size, rng)
            loss = loss + settings.failing_weight * F.cross_entropy(module(failing.x[wrong]), failing.labels[wrong])
        if verifiable:
            loss = loss + settings.verifiable_weight * verifiability_shortfall(module, verifiable, settings.verifiable_target)
        steps.step(loss)
        steps.step(F.cross_entropy(module(clean.x[batch]), clean.labels[batch]))
        done += 1
    steps.close()
    return done


def margin_preserving_recovery(module: TrainableNetwork, faults: dict[str, Tensor], kept: dict[str, Tensor],
                               failing: LabelledInputs, clean: CleanInputs, settings: InnerSettings, budget: Deadline,
                               rng: np.random.Generator, verifiable: list[RegionTensors] | None = None) -> int:
    """Train ``module`` in place for `InnerSettings.recovery_steps` recovery steps (see the module
    docstring; or until ``budget`` ends), at `InnerSettings.recovery_rate` of the repair steps'
    learning rate; ``verifiable`` as in `masked_optimisation`. Returns the steps run."""
    steps = MaskedSteps(module, faults, kept, settings.rate_share * settings.recovery_rate)
    done = 0
    for _ in range(settings.recovery_steps):
        if budget.expired():
            break
        batch = clean.batch(settings.batch_size, settings.data_share, rng)
        outputs = module(clean.x[batch])
        loss = (settings.distillation_weight * distillation(outputs, clean.outputs[batch], settings.temperature)
                + F.cross_entropy(outputs, clean.labels[batch]))
        if len(failing):
            wrong = _failing_batch(failing, settings.recovery_failing_batch, rng)
            margins = label_margins(module(failing.x[wrong]), failing.labels[wrong])
            loss = loss + settings.recovery_hinge_weight * torch.relu(settings.recovery_margin - margins).mean()
        if verifiable:
            loss = loss + settings.verifiable_weight * verifiability_shortfall(module, verifiable, settings.verifiable_target)
        steps.step(loss)
        done += 1
    steps.close()
    return done
