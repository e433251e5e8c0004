"""A small particle swarm optimiser (global-best topology), vectorised over the particles.

The objective takes all particle positions at once ([P, d] → [P]) so that BIRDNN's fitness can
evaluate every candidate neuron scaling in one batched network pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...verify import Deadline


@dataclass(frozen=True)
class SwarmSettings:
    particles: int = 24
    iterations: int = 60
    inertia: float = 0.72  # Clerc–Kennedy constriction values, a standard convergent choice
    cognitive: float = 1.49
    social: float = 1.49
    max_speed: float = 0.25  # fraction of the search range a particle may move in one step
    patience: int = 15  # stop after this many iterations without improving the best value
    seed: int = 0


@dataclass(frozen=True)
class SwarmResult:
    best: np.ndarray
    value: float
    iterations: int
    evaluations: int


def particle_swarm(objective: Callable[[np.ndarray], np.ndarray], lower: np.ndarray, upper: np.ndarray,
                   settings: SwarmSettings, start: np.ndarray | None = None,
                   deadline: Deadline | None = None) -> SwarmResult:
    """Minimise ``objective`` over the box [lower, upper]; ``start`` (if given) is one initial particle."""
    rng = np.random.default_rng(settings.seed)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    span = upper - lower
    positions = lower + rng.random((settings.particles, lower.size)) * span
    if start is not None:
        positions[0] = np.clip(start, lower, upper)
    velocities = (rng.random(positions.shape) - 0.5) * span * settings.max_speed
    values = np.asarray(objective(positions), dtype=np.float64)
    own_best, own_value = positions.copy(), values.copy()
    leader = int(np.argmin(values))
    best, best_value = positions[leader].copy(), float(values[leader])
    evaluations, stale, iteration = settings.particles, 0, 0
    for iteration in range(1, settings.iterations + 1):
        if deadline is not None and deadline.expired():
            break
        r1, r2 = rng.random(positions.shape), rng.random(positions.shape)
        velocities = (settings.inertia * velocities + settings.cognitive * r1 * (own_best - positions)
                      + settings.social * r2 * (best - positions))
        velocities = np.clip(velocities, -settings.max_speed * span, settings.max_speed * span)
        positions = np.clip(positions + velocities, lower, upper)
        values = np.asarray(objective(positions), dtype=np.float64)
        evaluations += settings.particles
        improved = values < own_value
        own_best[improved], own_value[improved] = positions[improved], values[improved]
        leader = int(np.argmin(own_value))
        if own_value[leader] < best_value:
            best, best_value, stale = own_best[leader].copy(), float(own_value[leader]), 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    return SwarmResult(best, best_value, iteration, evaluations)
