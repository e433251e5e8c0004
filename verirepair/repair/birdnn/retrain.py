"""BIRDNN retraining: the whole network learns to imitate expected behaviour on negative samples.

Loss on a minibatch (outputs measured in units of the margin scale of `RepairData`):

* imitation — negatives move to their imitation target (nearest positive behaviour), weight α;
* keep — positives keep their original outputs, weight β;
* outside — samples of the input space outside the property's boxes keep their outputs;
* decision — positives and outside samples keep their decision (arg-max or arg-min, as the
  problem says) with at least half of its original lead over the runner-up; on from the first
  check at which more than `keep_decisions_above` of the held-out safe samples changed theirs;
* margin — a squared hinge pulling every domain sample's property margin up to the target margin;
* certified — a hinge (squared by default, to a quarter of the target margin) on a CROWN lower
  bound of the margin over leaves of a partition of the boxes (`certified`), so that the margin
  holds between the samples too; on from the start when violations are rare, else once the
  verifier could not decide a candidate (see `BirdnnSettings.certify_below_violation`); once it
  could not decide one trained with this term either, or (where violations are rare) once half of
  a call's time passed with leaves still open, with the escalated hinge and target.

After every block of steps the property accuracy on a fixed held-out draw of the boxes is
measured; when it drops by more than the tolerance, or when more than `max_decision_change` of
the held-out samples safe in the original changed their decision, the weights roll back to the
best block and the learning rate halves. When every sample satisfies the target margin (and the
decisions are settled: `BirdnnSettings.decision_blocks`), a gradient search on the candidate
looks for low-margin points; any it finds join the negatives and training continues.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from ...verify import Deadline
from ..parameters import TrainableNetwork
from ..report import decisions_changed
from .attack import search_from_weakest
from .certified import Partition, certified_shortfall
from .common import (
    Phases,
    Session,
)
from .domain import RegionTensors
from .samples import RepairData
from .settings import BirdnnSettings
from .strategy import BirdnnStrategy


def property_accuracy(module: TrainableNetwork, data: RepairData) -> tuple[float, float, torch.Tensor]:
    """(fraction of validation samples where the property holds, fraction of the validation
    samples safe in the original whose decision changed, the margins of the domain samples)."""
    with torch.no_grad():
        y = module(data.validation.x)
        held_out = data.property.margin(y, data.validation.member)
        domain = data.property.margin(module(data.domain.x), data.domain.member)
        safe = data.validation.margin0 > 0
        changed = changed_share(data.validation.y0[safe], y[safe], data.decision)
    return float((held_out > 0).double().mean()), float(changed), domain


def outside_decisions_changed(module: TrainableNetwork, data: RepairData) -> float:
    """The fraction of the held-out outside samples whose decision changed."""
    samples = data.outside_held_out
    with torch.no_grad():
        return changed_share(samples.y0, module(samples.x), data.decision)


def changed_share(y0: torch.Tensor, y: torch.Tensor, rule: str) -> float:
    """The fraction of rows whose decision differs between ``y0`` and ``y`` (0 without rows)."""
    if len(y0) == 0:
        return 0.0
    return float(decisions_changed(*(t.detach().cpu().numpy() for t in (y0, y)), rule).mean())


def calibrated_learning_rate(module: TrainableNetwork, data: RepairData, step_change: float, probe: float = 1e-3) -> float:
    """The Adam step size whose sign step on every weight moves the domain outputs (RMS) by
    ``step_change`` margin scales: output change is close to linear in so small a step."""
    generator = torch.Generator().manual_seed(0)
    moved = copy.deepcopy(module)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(probe * torch.sign(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)))
        x = data.domain.x[:4096]
        change = float((moved(x) - module(x)).pow(2).mean().sqrt())
    return probe * step_change * data.scale / max(change, 1e-12)


def decision_scores(y: torch.Tensor, rule: str) -> torch.Tensor:
    """Outputs signed so that the decision is their arg-max under the rule (the top of the
    order for ``ranking``)."""
    return -y if rule == "argmin" else y


def decision_shortfall(y: torch.Tensor, y0: torch.Tensor, rule: str, keep: float) -> torch.Tensor:
    """[N]: how far the gap between each sample's original decision and its runner-up (in ``y``)
    falls short of ``keep`` times that gap in the original outputs ``y0`` (0 where it does not).
    For ``ranking``, the largest such shortfall over the neighbours of the original order (each
    output and the next one down): 0 there means the whole order is kept where ``y0`` has no ties."""
    if rule == "ranking":
        order = torch.argsort(y0, dim=1, descending=True, stable=True)
        sorted0, now = y0.gather(1, order), y.gather(1, order)
        gaps0, gaps = sorted0[:, :-1] - sorted0[:, 1:], now[:, :-1] - now[:, 1:]
        return torch.relu(keep * gaps0 - gaps).amax(dim=1)
    score, score0 = decision_scores(y, rule), decision_scores(y0, rule)
    decision = score0.argmax(dim=1, keepdim=True)
    others = torch.ones_like(score0, dtype=torch.bool).scatter_(1, decision, False)
    runner_up0 = torch.where(others, score0, torch.full_like(score0, -torch.inf)).amax(dim=1)
    runner_up = torch.where(others, score, torch.full_like(score, -torch.inf)).amax(dim=1)
    gap0 = score0.gather(1, decision).squeeze(1) - runner_up0
    gap = score.gather(1, decision).squeeze(1) - runner_up
    return torch.relu(keep * gap0 - gap)


def repair_loss(module: TrainableNetwork, data: RepairData, settings: BirdnnSettings, generator: torch.Generator,
                boxes: list[tuple[RegionTensors, torch.Tensor, torch.Tensor]] = (), keep_decisions: bool = True) -> torch.Tensor:
    domain, outside = data.domain, data.outside
    batch = settings.batch_size
    index = torch.randint(len(domain), (batch,), generator=generator)
    negatives = torch.nonzero(data.negatives).flatten()
    if len(negatives):
        extra = negatives[torch.randint(len(negatives), (batch // 2,), generator=generator)]
        index = torch.cat([index, extra])
    x, member = domain.x[index], domain.member[index]
    negative = domain.margin0[index] <= 0
    y = module(x)
    scale = data.scale
    squared = ((y - data.targets[index]) / scale).pow(2).mean(dim=1)
    loss = settings.keep_weight * torch.where(~negative, squared, torch.zeros_like(squared)).mean()
    keep_decisions = keep_decisions and settings.decision_weight > 0
    if keep_decisions and bool((~negative).any()):
        kept = decision_shortfall(y[~negative], domain.y0[index][~negative], data.decision, settings.decision_keep)
        loss = loss + settings.decision_weight * (kept / scale).pow(2).mean()
    if bool(negative.any()):
        loss = loss + settings.imitation_weight * squared[negative].mean()
    shortfall = torch.relu(data.target_margin - data.property.margin(y, member)) / scale
    loss = loss + settings.margin_weight * shortfall.pow(2).mean()
    if len(outside):
        pick = torch.randint(len(outside), (batch // 2,), generator=generator)
        y_out = module(outside.x[pick])
        kept = ((y_out - outside.y0[pick]) / data.outside_scale[pick]).pow(2).mean()
        loss = loss + settings.outside_weight * kept
        if keep_decisions:
            flipped = decision_shortfall(y_out, outside.y0[pick], data.decision, settings.decision_keep)
            loss = loss + settings.decision_weight * (flipped / data.outside_scale[pick].squeeze(1)).pow(2).mean()
    if boxes:
        loss = loss + settings.certified_weight * certified_shortfall(module, list(boxes), settings.certified_target * data.target_margin, scale,
                                                                       settings.certified_hinge == "squared")
    return loss


def certified_partition(session: Session, settings: BirdnnSettings) -> Partition | None:
    """The session's partition of the property's boxes (built and refined on first use)."""
    if not session.certify or settings.certified_weight <= 0 or session.data.spec.n_inputs > settings.certified_max_inputs:
        return None
    if session.partition is None:
        data = session.data
        session.partition = Partition(data.property.regions, settings.certified_min_width, settings.certified_max_boxes, data.dtype)
        session.partition.refine(session.current, data.target_margin, passes=16)
    return session.partition


def certified(partition: Partition | None, module: TrainableNetwork, data: RepairData) -> bool:
    """Every leaf's margin bound is positive, all re-bounded now (True without a partition)."""
    if partition is None:
        return True
    partition.refine(module, data.target_margin, everything=True)
    return partition.open == 0


def escalated(settings: BirdnnSettings) -> BirdnnSettings:
    """The settings with the escalated certified hinge and target."""
    return dataclasses.replace(settings, certified_hinge=settings.escalated_hinge, certified_target=settings.escalated_target)


def stalls(session: Session, partition: Partition, settings: BirdnnSettings, budget: Deadline) -> bool:
    """Whether certified training where violations are rare should step up its hinge now: the
    share of the call's time `escalate_after_share` has passed and leaves are still open."""
    return (session.violations_rare(settings) and not session.escalated and partition.open > 0
            and budget.elapsed() > settings.escalate_after_share * budget.seconds)


def retrain(session: Session, settings: BirdnnSettings, budget: Deadline, phases: Phases) -> dict[str, object]:
    """Train ``session.current`` in place; returns what the report shows."""
    module, data = session.current, session.data
    if session.escalated:
        settings = escalated(settings)
    generator = torch.Generator().manual_seed(settings.seed + 7919 * session.rounds)
    rng = np.random.default_rng(settings.seed + session.rounds)
    learning_rate = calibrated_learning_rate(module, data, settings.step_change)
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    accuracy, changed, margins = property_accuracy(module, data)
    keep_decisions = changed > settings.keep_decisions_above
    partition = certified_partition(session, settings)
    best_state, best_accuracy = module.state(), accuracy
    rollbacks = attacks_added = checks = kept_blocks = 0
    satisfied = False
    for checks in range(1, settings.max_checks + 1):
        if budget.expired():
            break
        kept_blocks += int(keep_decisions)
        with phases("retrain"):
            for _ in range(settings.steps_per_check):
                optimiser.zero_grad()
                boxes = partition.draw(settings.certified_boxes, data.target_margin, module, rng) if partition is not None else []
                repair_loss(module, data, settings, generator, boxes, keep_decisions).backward()
                optimiser.step()
            accuracy, changed, margins = property_accuracy(module, data)
            keep_decisions = keep_decisions or changed > settings.keep_decisions_above
            if partition is not None:
                partition.refine(module, data.target_margin)
                if stalls(session, partition, settings, budget):
                    session.escalated, settings = True, escalated(settings)
            if accuracy < best_accuracy - settings.rollback_tolerance or changed > settings.max_decision_change:
                module.load(best_state)
                learning_rate *= 0.5
                optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
                rollbacks += 1
                continue
            if accuracy >= best_accuracy:
                best_state, best_accuracy = module.state(), accuracy
        lowest = float(margins.min())
        # A candidate that changed many decisions first trains with the decision term for a while.
        decisions_settled = changed <= settings.keep_decisions_above or kept_blocks >= settings.decision_blocks
        if (accuracy == 1.0 and lowest >= settings.satisfied_fraction * data.target_margin and decisions_settled
                and certified(partition, module, data)):
            with phases("search"):
                found = search_from_weakest(module, data, settings, rng)
            if len(found) == 0:
                satisfied = True
                break
            with phases("characterise"):
                attacks_added += data.add_points(found, with_neighbours=False)
    session.rounds += 1
    return {"checks": checks, "rollbacks": rollbacks, "search_points_added": attacks_added,
            "samples_satisfied": satisfied, "held_out_property_accuracy": accuracy, "held_out_decisions_changed": changed,
            "smallest_sample_margin": float(margins.min()),
            "partition_boxes": partition.size if partition else 0, "partition_open": partition.open if partition else 0, "learning_rate": learning_rate, "target_margin": data.target_margin}


def polish(session: Session, settings: BirdnnSettings, budget: Deadline, phases: Phases) -> dict[str, object] | None:
    """After ``session.current`` was proven: train it to give back decisions it changed.

    Retraining settles for the first candidate that meets its targets, and the certified and
    margin terms pull it against the decision term; once a proof is in hand, blocks with the
    decision term `polish_decision_weight` strong and a smaller learning rate often win back part
    of the changed decisions. A block's weights are a polished candidate only if they are as good
    as the proven ones on every other count: property accuracy 1 on the held-out draw, smallest
    domain margin at least the satisfied level (or the proven one's, if lower), no more open
    partition leaves, no more changed decisions among held-out samples outside the boxes, no
    low-margin point found by the gradient search, and at most (1 - `polish_gain`) of the proven
    candidate's changed decisions in the boxes. The best such block is returned; None when there
    is none (``session.current`` is then the proven network again). The loop verifies the
    candidate and keeps whichever proof changed less. Every call starts again from the proven
    weights; a counterexample to the last polished candidate is among the negatives by then.
    """
    module, data = session.current, session.data
    if session.proven_state is None:
        session.proven_state = module.state()
    proven_state = session.proven_state
    module.load(proven_state)  # each attempt starts from the proof, with every counterexample known
    accuracy, changed, margins = property_accuracy(module, data)
    if settings.polish_blocks < 1 or changed <= settings.polish_above or accuracy < 1.0:
        return None
    proven_changed, proven_outside = changed, outside_decisions_changed(module, data)
    if session.escalated:
        settings = escalated(settings)
    settings = dataclasses.replace(settings, decision_weight=settings.polish_decision_weight)
    lowest_allowed = min(settings.satisfied_fraction * data.target_margin, float(margins.min()))
    partition = certified_partition(session, settings)
    if partition is not None:
        partition.refine(module, data.target_margin, everything=True)
    open_allowed = partition.open if partition is not None else 0
    generator = torch.Generator().manual_seed(settings.seed + 7919 * session.rounds + 1)
    rng = np.random.default_rng(settings.seed + session.rounds + 1)
    learning_rate = settings.polish_rate_share * calibrated_learning_rate(module, data, settings.step_change)
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    best_state, best_changed, best_lowest, blocks = None, (1.0 - settings.polish_gain) * proven_changed, 0.0, 0
    for blocks in range(1, settings.polish_blocks + 1):
        if budget.expired():
            break
        with phases("polish"):
            for _ in range(settings.steps_per_check):
                optimiser.zero_grad()
                boxes = partition.draw(settings.certified_boxes, data.target_margin, module, rng) if partition is not None else []
                repair_loss(module, data, settings, generator, boxes, keep_decisions=True).backward()
                optimiser.step()
            accuracy, changed, margins = property_accuracy(module, data)
            if (accuracy < 1.0 or float(margins.min()) < lowest_allowed or changed >= best_changed
                    or outside_decisions_changed(module, data) > proven_outside):
                continue
            if partition is not None:
                partition.refine(module, data.target_margin, everything=True)
                if partition.open > open_allowed:
                    continue
        with phases("search"):
            if len(search_from_weakest(module, data, settings, rng, margins)):
                continue
        best_state, best_changed, best_lowest = module.state(), changed, float(margins.min())
    module.load(best_state if best_state is not None else proven_state)
    session.rounds += 1
    if best_state is None:
        return None
    return {"polished": True, "polish_blocks": blocks, "proven_held_out_decisions_changed": proven_changed,
            "held_out_decisions_changed": best_changed, "smallest_sample_margin": best_lowest}


class BirdnnRetrain(BirdnnStrategy):
    """`RepairStrategy` "birdnn-retrain": behaviour-imitation retraining of every weight."""

    name = "birdnn-retrain"
    improve = staticmethod(retrain)
    polish_step = staticmethod(polish)


def retrain_strategy() -> BirdnnRetrain:
    return BirdnnRetrain()
