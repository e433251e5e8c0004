"""What both BIRDNN strategies share: the per-problem session (the original network's own graph
with trainable weights, the domain samples, the current candidate) and turning a module into a
`RepairCandidate` (the original ONNX model with the module's weights)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ...verify import Deadline
from ..parameters import TrainableNetwork, exported_model
from ..strategy import RepairCandidate, RepairProblem, call_budget
from .certified import Partition
from .samples import RepairData
from .settings import BirdnnSettings


@dataclass
class Session:
    key: tuple[object, ...]
    original: TrainableNetwork
    current: TrainableNetwork
    data: RepairData
    rounds: int = 0
    partition: Partition | None = None  # of the property's boxes, for the certified-margin loss
    certify: bool = False  # whether retraining adds the certified-margin loss (see BirdnnSettings)
    escalated: bool = False  # whether it uses the escalated hinge (see BirdnnSettings.escalated_hinge)
    proven_state: list[torch.Tensor] | None = None  # the proven candidate's weights, once polishing starts

    def violations_rare(self, settings: BirdnnSettings) -> bool:
        """At most `BirdnnSettings.certify_below_violation` of the uniform box samples violate:
        certified training from the start, and the rare-violation rules of retraining."""
        return self.data.violating_fraction <= settings.certify_below_violation


def problem_key(problem: RepairProblem) -> tuple[object, ...]:
    network = problem.original
    where = str(network.path.resolve()) if network.path is not None else id(network)
    return (where, problem.spec.source, len(problem.spec.regions), problem.seed)


def open_session(problem: RepairProblem, previous: RepairCandidate | None, session: Session | None,
                 settings: BirdnnSettings) -> Session:
    """The session to continue (same problem, a previous candidate exists) or a fresh one."""
    key = problem_key(problem)
    if session is not None and session.key == key and previous is not None:
        return session
    torch.manual_seed(settings.seed + problem.seed)
    original = TrainableNetwork(problem.original)
    original.requires_grad_(False)
    data = RepairData(problem.spec, original, _with_seed(settings, settings.seed + problem.seed),
                      keep_inputs=problem.keep_inputs, decision=problem.decision, domain=problem.domain)
    return Session(key, original, copy.deepcopy(original).requires_grad_(True), data)


def _with_seed(settings: BirdnnSettings, seed: int) -> BirdnnSettings:
    from dataclasses import replace

    return replace(settings, seed=seed)


def repair_budget(settings: BirdnnSettings, deadline: Deadline) -> Deadline:
    """This call's own deadline: a share of what the loop has left (it still has to verify)."""
    return call_budget(settings.max_seconds, settings.deadline_share, deadline)


def candidate_of(module: TrainableNetwork, problem: RepairProblem, details: dict[str, object],
                 phases: dict[str, float]) -> RepairCandidate:
    start = time.monotonic()
    model = exported_model(module, {"strategy": details.get("strategy", "birdnn")})
    phases = dict(phases)
    phases["export"] = phases.get("export", 0.0) + time.monotonic() - start
    return RepairCandidate(model, details, phases)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch threads (the machines are shared), restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Phases:
    """Wall-clock seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start


def counterexample_array(problem: RepairProblem) -> np.ndarray:
    if not problem.counterexamples:
        return np.zeros((0, problem.spec.n_inputs))
    return np.vstack([np.asarray(c, dtype=np.float64).reshape(1, -1) for c in problem.counterexamples])
