"""The one interface every repair strategy implements, and the data it exchanges with the loop.

The `check-and-fix` loop (``loop.py``) owns verification: it verifies the original network, hands
the strategy every counterexample found so far, exports the strategy's candidate as an ONNX file,
and re-verifies *that file* with the complete verifier. A strategy never claims success itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import onnx

from ..network import Network
from ..spec import Box, Spec
from ..verify import Deadline


@dataclass(frozen=True)
class RepairProblem:
    """What a strategy may use: the original network (never modified), the property, and the
    buggy inputs known so far (flat float64 inputs, each confirmed in onnxruntime)."""

    original: Network
    spec: Spec
    counterexamples: tuple[np.ndarray, ...]
    seed: int = 0
    device: str = "cpu"
    # True: the goal is the whole property (check-and-fix): a strategy may look for more buggy
    # inputs itself. False: point-wise repair: fix exactly the given counterexamples.
    area: bool = True
    # Point-wise repair only: the spec region each counterexample must satisfy (one region per
    # required label); None: the strategy finds the region a counterexample violates.
    targets: tuple[int, ...] | None = None
    # Inputs of the network's use (e.g. the `--data` set) whose behaviour a strategy that changes
    # weights must keep where they lie outside the property's boxes; None: sample the input space.
    keep_inputs: np.ndarray | None = None
    # The decision each of ``keep_inputs`` should get (the data set's labels, one per row, as
    # output indices); None: not known. A strategy may train towards them.
    keep_labels: np.ndarray | None = None
    # Which order of the outputs is the network's decision: "argmax" (classifiers), "argmin" (ACAS
    # Xu scores) or "ranking" (the whole order, so both of those); a strategy that keeps decisions
    # keeps this one where it should not touch them.
    decision: str = "ranking"
    # Where the network is used (`--domain`, a box holding the property's boxes): strategies keep
    # its behaviour there outside the boxes. None: no such box was given.
    domain: Box | None = None
    # Every property a candidate must be proven on (check-and-fix of a suite: those that held or
    # were undecided too); a strategy may keep or raise their margins. Empty: ``spec`` alone.
    suite: tuple[Spec, ...] = ()


ACCURACY_POLISH = "accuracy"
"""``polish_goal`` of a polished candidate the strategy chose for a higher accuracy on a validation
split of the keep inputs it never trained on (the labels of ``--data``), not for fewer changed
decisions; the loop keeps it if it is proven."""


@dataclass(frozen=True)
class RepairCandidate:
    """A repaired network as an ONNX model (standard operators, same input/output names and
    shapes as the original), plus what the strategy wants in the report."""

    model: onnx.ModelProto
    details: dict[str, object] = field(default_factory=dict)  # e.g. regions patched, parameters added
    phase_seconds: dict[str, float] = field(default_factory=dict)  # e.g. localise, synthesise


def call_budget(cpu_seconds: float, share: float, deadline: Deadline) -> Deadline:
    """A repair call's own deadline: at most ``cpu_seconds`` of this process's CPU time, so that a
    call does the same work, and gives the same candidate, on an idle or a loaded machine; and at
    most ``share`` of the wall-clock time the loop has left (it still has to verify), at least a
    second of each."""
    return Deadline(max(1.0, cpu_seconds), clock=time.process_time,
                    within=Deadline(max(1.0, share * deadline.remaining())))


class RepairStrategy(Protocol):
    name: str

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None,
               deadline: Deadline) -> RepairCandidate:
        """A new candidate fixing ``problem.counterexamples`` (and, ideally, the whole spec).

        ``previous`` is the last candidate that failed re-verification (None at first); a strategy
        may refine it or start again from ``problem.original``.
        """
        ...

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        """After ``proven`` (this strategy's last candidate) was proven: a candidate meant to have
        smaller side effects, or None. The loop verifies it and keeps it only if it is proven
        and changed fewer decisions; a candidate whose details say ``polish_goal`` =
        `ACCURACY_POLISH` is kept if it is proven."""
        ...


@runtime_checkable
class Portfolio(Protocol):
    """A strategy made of member strategies run in turn (`StrategySequence`); the loop puts its
    record in the report."""

    def members_report(self) -> list[dict[str, object]]:
        """One entry per member that ran: ``member`` (its name), its share, calls and why it ended."""
        ...


@runtime_checkable
class SharedBudget(Protocol):
    """A portfolio whose members own their shares with their candidates' verification (`auto`):
    the loop verifies a member's candidate only until the member's share ends."""

    def share_left(self) -> float | None:
        """Seconds left in the current member's share; None when the current member keeps
        whatever time the run has left."""
        ...


class WithoutPolish:
    """`RepairStrategy.polish` for strategies that have no polishing step."""

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        return None
