"""A strategy that hands over to the next one when the current one runs out of its time share.

Different repair methods fail on different networks: on ACAS Xu property 2, BIRDNN retraining
proved 38 of 39 networks and fine-tuning proved the one it missed (N1,3, where each retrained
candidate had a new counterexample). `StrategySequence` runs its strategies one after the other
inside one check-and-fix run: strategy ``i`` owns the time until ``shares[i]`` of the run's budget
has passed (counted from the first call, verification included), then the next one starts afresh
from the original network with every counterexample found so far. Nothing here decides anything:
each candidate is still exported and verified by the loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..verify import Deadline
from .birdnn import BirdnnFinetune, BirdnnRetrain, BirdnnSettings
from .strategy import RepairCandidate, RepairProblem, RepairStrategy


# A strategy hands over this fraction of the budget before its share ends.
HAND_OVER_EARLY = 0.05


class StrategySequence:
    def __init__(self, name: str, strategies: Sequence[RepairStrategy], shares: Sequence[float]) -> None:
        """``shares``: the cumulative fraction of the budget at which each strategy but the last
        hands over (increasing, in (0, 1)); the last strategy keeps whatever time is left."""
        if len(shares) != len(strategies) - 1 or not strategies:
            raise ValueError("a sequence needs one hand-over share per strategy but the last")
        if list(shares) != sorted(shares) or not all(0.0 < s < 1.0 for s in shares):
            raise ValueError(f"hand-over shares must increase within (0, 1), got {list(shares)}")
        self.name = name
        self.strategies = list(strategies)
        self.shares = list(shares)
        self._started: float | None = None
        self._budget = 0.0
        self._current = 0
        self._original_id: int | None = None

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        now = time.monotonic()
        if self._started is None or self._original_id != id(problem.original):  # a new run
            self._started, self._budget, self._current = now, deadline.remaining(), 0
            self._original_id = id(problem.original)
        # Hand over a little before the share ends: a strategy left with seconds can only return
        # its last candidate again, which would end the whole run.
        while (self._current < len(self.shares)
               and now - self._started >= (self.shares[self._current] - HAND_OVER_EARLY) * self._budget):
            self._current += 1
            previous = None  # the next strategy starts from the original network
        candidate = self._current_strategy_repair(problem, previous, deadline)
        if (previous is not None and self._current < len(self.shares)
                and candidate.model.SerializeToString() == previous.model.SerializeToString()):
            self._current += 1  # nothing new from this strategy: the next one's turn
            candidate = self._current_strategy_repair(problem, None, deadline)
        return candidate

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        """The polishing step of the strategy whose candidate was proven (the current one)."""
        polished = self.strategies[self._current].polish(problem, proven, deadline)
        if polished is None:
            return None
        details = {**polished.details, "sequence_step": self.strategies[self._current].name}
        return RepairCandidate(polished.model, details, polished.phase_seconds)

    def _current_strategy_repair(self, problem: RepairProblem, previous: RepairCandidate | None,
                                 deadline: Deadline) -> RepairCandidate:
        assert self._started is not None
        own = deadline
        if self._current < len(self.shares):
            end = self._started + self.shares[self._current] * self._budget
            own = Deadline(min(deadline.remaining(), max(0.0, end - time.monotonic())))
        strategy = self.strategies[self._current]
        candidate = strategy.repair(problem, previous, own)
        details = {**candidate.details, "sequence_step": strategy.name}
        return RepairCandidate(candidate.model, details, candidate.phase_seconds)


# Retraining owns the budget up to this share: it proves far more than fine-tuning, and where
# violations are rare it needs several calls (ACAS Xu N1,9 property 7, 600 s budget: four calls
# before its one candidate went out at about 440 s, proven; no fine-tuned candidate of it was ever
# proven, and no property 2 run of session 8 reached the old hand-over at 60 %).
RETRAIN_SHARE = 0.8


def birdnn_sequence(settings: BirdnnSettings | None = None) -> StrategySequence:
    """BIRDNN retraining, then fine-tuning for the rest of the budget."""
    return StrategySequence("birdnn", [BirdnnRetrain(settings), BirdnnFinetune(settings)], [RETRAIN_SHARE])
