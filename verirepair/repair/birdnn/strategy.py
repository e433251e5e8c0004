"""The `RepairStrategy` shell shared by both BIRDNN methods: sample bookkeeping across rounds,
counterexamples in, one improvement step, the candidate out."""

from __future__ import annotations

from collections.abc import Callable

from ...verify import Deadline
from ..strategy import RepairCandidate, RepairProblem
from .common import (
    Phases,
    Session,
    candidate_of,
    counterexample_array,
    open_session,
    problem_key,
    repair_budget,
    torch_threads,
)
from .settings import BirdnnSettings

Improvement = Callable[[Session, BirdnnSettings, Deadline, Phases], dict]
Polish = Callable[[Session, BirdnnSettings, Deadline, Phases], "dict | None"]


class BirdnnStrategy:
    """Subclasses name the strategy and give the improvement step (retraining or fine-tuning),
    and optionally a polishing step for a proven candidate."""

    name: str
    improve: Improvement
    polish_step: Polish | None = None

    def __init__(self, settings: BirdnnSettings | None = None) -> None:
        self.settings = settings or BirdnnSettings()
        self.session: Session | None = None

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        settings = self.settings
        phases = Phases()
        with torch_threads(settings.threads):
            budget = repair_budget(settings, deadline)
            with phases("characterise"):
                self.session = open_session(problem, previous, self.session, settings)
                added = self.session.data.add_points(counterexample_array(problem), with_neighbours=True)
                if previous is not None and added == 0:  # the verifier could not decide the last one
                    self.session.data.target_margin *= settings.margin_growth
                    self.session.escalated |= self.session.certify
                    self.session.certify = True
                self.session.certify |= self.session.violations_rare(settings)
            details = type(self).improve(self.session, settings, budget, phases)
            while self._train_on(details, deadline):
                details = type(self).improve(self.session, settings, repair_budget(settings, deadline), phases)
            data = self.session.data
            details.update({"strategy": self.name, "round": self.session.rounds, "counterexample_points_added": added,
                            "domain_samples": len(data.domain), "negative_samples": int(data.negatives.sum()),
                            "outside_samples": len(data.outside)})
            return candidate_of(self.session.current, problem, details, phases.seconds)

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        step = type(self).polish_step
        if step is None or self.session is None or self.session.key != problem_key(problem):
            return None
        phases = Phases()
        with torch_threads(self.settings.threads):
            self.session.data.add_points(counterexample_array(problem), with_neighbours=True)
            details = step(self.session, self.settings, repair_budget(self.settings, deadline), phases)
            if details is None:
                return None
            details.update({"strategy": self.name, "round": self.session.rounds})
            return candidate_of(self.session.current, problem, details, phases.seconds)

    def _train_on(self, details: dict, deadline: Deadline) -> bool:
        """Whether to improve again before the verifier sees the candidate: violations are rare,
        too many partition leaves are still open (`BirdnnSettings.verify_open_share`) and the
        strategy has time for a call worth making."""
        settings, session = self.settings, self.session
        assert session is not None
        leaves, still_open = int(details.get("partition_boxes", 0)), int(details.get("partition_open", 0))
        return (session.violations_rare(settings) and leaves > 0 and still_open > settings.verify_open_share * leaves
                and repair_budget(settings, deadline).seconds >= settings.max_seconds / 4)
