"""A strategy that hands over to the next one when the current one runs out of its time share.

Different repair methods fail on different networks: on ACAS Xu property 2, BIRDNN retraining
proved 38 of 39 networks and fine-tuning proved the one it missed (N1,3, where each retrained
candidate had a new counterexample). `StrategySequence` runs its strategies one after the other
inside one check-and-fix run: strategy ``i`` (all but the last) owns ``shares[i]`` of the time left
when it starts (verification included), the last one whatever is left. A strategy also hands over
when it has nothing new (it answers with its previous candidate) or does not apply to the network
(it raises `InputError`, e.g. REASSURE's patches on a non-ReLU network). The next one starts afresh
from the original network with every counterexample found so far. Nothing here decides anything:
each candidate is still exported and verified by the loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import InputError
from ..verify import Deadline
from .birdnn import BirdnnFinetune, BirdnnRetrain, BirdnnSettings
from .strategy import Portfolio, RepairCandidate, RepairProblem, RepairStrategy

# A strategy hands over this fraction of the time left at its start before its share ends.
HAND_OVER_EARLY = 0.05


class StrategySequence:
    def __init__(self, name: str, strategies: Sequence[RepairStrategy], shares: Sequence[float]) -> None:
        """``shares``: for each strategy but the last, the fraction of the time left when it starts
        that it owns (each in (0, 1)); the last strategy keeps whatever time is left."""
        if len(shares) != len(strategies) - 1 or not strategies:
            raise ValueError("a sequence needs one share per strategy but the last")
        if not all(0.0 < s < 1.0 for s in shares):
            raise ValueError(f"shares must lie within (0, 1), got {list(shares)}")
        self.name = name
        self.strategies = list(strategies)
        self.shares = list(shares)
        self._original_id: int | None = None
        self._current = 0
        self._end = 0.0  # when the current strategy's share ends (monotonic seconds)
        self._left = 0.0  # the run's time left when the current strategy started
        self._record: list[dict[str, object]] = []

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        if self._original_id != id(problem.original):  # a new run
            self._original_id, self._record = id(problem.original), []
            self._start(0, deadline)
        # Hand over a little before the share ends: a strategy left with seconds can only return
        # its last candidate again, which would end the whole run.
        while self._current < len(self.shares) and time.monotonic() >= self._end - HAND_OVER_EARLY * self._left:
            self._hand_over("its share was spent", deadline)
            previous = None  # the next strategy starts from the original network
        while True:
            try:
                candidate = self._current_strategy_repair(problem, previous, deadline)
            except InputError as error:
                if self._current == len(self.shares):
                    raise
                self._hand_over(f"does not apply: {error.reason}", deadline)
                previous = None
                continue
            if (previous is not None and self._current < len(self.shares)
                    and candidate.model.SerializeToString() == previous.model.SerializeToString()):
                self._hand_over("nothing new", deadline)  # the next strategy's turn
                previous = None
                continue
            return candidate

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        """The polishing step of the strategy whose candidate was proven (the current one)."""
        polished = self.strategies[self._current].polish(problem, proven, deadline)
        if polished is None:
            return None
        return RepairCandidate(polished.model, self._step_details(polished), polished.phase_seconds)

    def members_report(self) -> list[dict[str, object]]:
        """The strategies that ran, in order: name, seconds granted, calls and why each ended
        (the current one: "last to run"); a member that is a portfolio itself lists its own."""
        record = [dict(entry) for entry in self._record]
        if record and record[-1]["ended"] is None:
            record[-1]["ended"] = "last to run"
        for entry, strategy in zip(record, self.strategies):
            if isinstance(strategy, Portfolio):
                entry["members"] = strategy.members_report()
        return record

    def time_left_in_share(self) -> float | None:
        """Seconds until the current strategy's share ends; None for the last one."""
        return max(0.0, self._end - time.monotonic()) if self._current < len(self.shares) else None

    def _start(self, index: int, deadline: Deadline) -> None:
        self._current = index
        self._left = left = deadline.remaining()
        share = self.shares[index] if index < len(self.shares) else 1.0
        self._end = time.monotonic() + share * left
        self._record.append({"member": self.strategies[index].name, "share": share,
                             "seconds_granted": round(share * left, 1), "calls": 0, "ended": None})

    def _hand_over(self, why: str, deadline: Deadline) -> None:
        self._record[-1]["ended"] = why
        self._start(self._current + 1, deadline)

    def _step_details(self, candidate: RepairCandidate) -> dict[str, object]:
        """The candidate's details with the step that made it (``outer/inner`` for nested sequences)."""
        inner = candidate.details.get("sequence_step")
        step = self.strategies[self._current].name + (f"/{inner}" if inner is not None else "")
        return {**candidate.details, "sequence_step": step}

    def _current_strategy_repair(self, problem: RepairProblem, previous: RepairCandidate | None,
                                 deadline: Deadline) -> RepairCandidate:
        own = deadline
        if self._current < len(self.shares):
            own = Deadline(min(deadline.remaining(), max(0.0, self._end - time.monotonic())))
        self._record[-1]["calls"] = int(self._record[-1]["calls"]) + 1  # type: ignore[call-overload]
        candidate = self.strategies[self._current].repair(problem, previous, own)
        return RepairCandidate(candidate.model, self._step_details(candidate), candidate.phase_seconds)


# Retraining owns the budget up to this share: it proves far more than fine-tuning, and where
# violations are rare it needs several calls (ACAS Xu N1,9 property 7, 600 s budget: four calls
# before its one candidate went out at about 440 s, proven; no fine-tuned candidate of it was ever
# proven, and no property 2 run of session 8 reached the old hand-over at 60 %).
RETRAIN_SHARE = 0.8


def birdnn_sequence(settings: BirdnnSettings | None = None) -> StrategySequence:
    """BIRDNN retraining, then fine-tuning for the rest of the budget."""
    return StrategySequence("birdnn", [BirdnnRetrain(settings), BirdnnFinetune(settings)], [RETRAIN_SHARE])
