"""The `RepairStrategy` "inner": INNER's localisation and masked optimisation in the
check-and-fix loop.

The first call of a problem localises on the original network (probes, layer ranking, neuron
routing; `localise`), then every call trains the fault set of the top-ranked layers
(`optimise`) in rounds, each followed by a PGD search of the property's boxes for points where
the candidate's margin is still low, which join the failing inputs; once the search finds none,
rounds of margin-preserving recovery give clean behaviour back (`optimise`; not in INNER). INNER
itself stops when the repaired network's accuracy on the failing and clean sets is good enough;
here the loop decides: it verifies the exported file, and a counterexample comes back as a failing
input of the next call, whose fault set is `InnerSettings.fault_growth` times larger. A candidate
the verifier could not decide (the next call gets no new counterexample) switches the
verifiability term on for the calls after it (not in INNER either).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ...verify import Deadline
from ..birdnn.common import (
    Phases,
    candidate_of,
    counterexample_array,
    problem_key,
    torch_threads,
)
from ..birdnn.samples import PropertyMargin
from ..parameters import TrainableNetwork
from ..strategy import RepairCandidate, RepairProblem, WithoutPolish, call_budget
from .inputs import (
    CleanInputs,
    LabelledInputs,
    attacked,
    clean_inputs,
    labelled_failing,
)
from .labels import protected_labels
from .localise import Localisation, localise
from .optimise import label_margins, margin_preserving_recovery, masked_optimisation
from .settings import InnerSettings

Tensor = torch.Tensor


@dataclass
class Session:
    """What INNER keeps across the calls of one repair problem."""

    key: tuple[object, ...]
    original: TrainableNetwork
    current: TrainableNetwork
    prop: PropertyMargin
    labels: tuple[int, ...]  # per region, the label it protects
    clean: CleanInputs
    failing: LabelledInputs
    localisation: Localisation | None = None
    calls: int = 0
    counterexamples_seen: int = 0  # the problem's counterexamples at the last call
    verifiable: bool = False  # the verifiability term is on (after an undecided candidate)


class InnerStrategy(WithoutPolish):
    """INNER (Chen et al., ISSTA 2024): interpretability-based localisation, masked optimisation."""

    name = "inner"

    def __init__(self, settings: InnerSettings | None = None) -> None:
        self.settings = settings or InnerSettings()
        self.session: Session | None = None

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        settings = self.settings
        phases = Phases()
        with torch_threads(settings.threads):
            budget = call_budget(settings.max_seconds, settings.deadline_share, deadline)
            rng = np.random.default_rng(settings.seed + problem.seed + (self.session.calls if self.session else 0))
            with phases("inputs"):
                session = self._session(problem, previous, rng)
                if previous is not None and len(problem.counterexamples) == session.counterexamples_seen:
                    session.verifiable = settings.verifiable_weight > 0  # the verifier could not decide it
                session.counterexamples_seen = len(problem.counterexamples)
                session.failing = session.failing.extended(self._counterexamples(session, problem))
                if problem.area and session.localisation is None:
                    seeds = session.failing.x
                    session.failing = session.failing.extended(attacked(
                        session.original, session.prop, session.labels, seeds, settings.attack_starts,
                        settings.attack_steps, 0.0, rng))
            with phases("localise"):
                if session.localisation is None:
                    session.localisation = localise(session.original, session.clean.x, session.clean.labels,
                                                    session.failing.x, session.failing.labels,
                                                    problem.original.n_outputs, settings, rng)
            details = self._train(session, problem.area, budget, phases, rng)
            session.calls += 1
            return candidate_of(session.current, problem, details, phases.seconds)

    def _session(self, problem: RepairProblem, previous: RepairCandidate | None, rng: np.random.Generator) -> Session:
        """The session to continue (same problem, a previous candidate exists) or a fresh one."""
        key = problem_key(problem)
        session = self.session
        if session is not None and session.key == key and previous is not None:
            return session
        labels = protected_labels(problem.spec)
        torch.manual_seed(self.settings.seed + problem.seed)
        original = TrainableNetwork(problem.original)
        original.requires_grad_(False)
        clean = clean_inputs(original, problem.spec, problem.keep_inputs, problem.domain, self.settings.clean_inputs,
                             self.settings.box_samples, rng)
        empty = LabelledInputs(torch.zeros((0, problem.spec.n_inputs), dtype=original.dtype), torch.zeros(0, dtype=torch.long))
        self.session = Session(key, original, copy.deepcopy(original), PropertyMargin(problem.spec, original.dtype), labels,
                               clean, empty)
        return self.session

    @staticmethod
    def _counterexamples(session: Session, problem: RepairProblem) -> LabelledInputs:
        """The problem's counterexamples with their labels: the target region's (point-wise
        repair), else the region each violates on the current network."""
        points = counterexample_array(problem)
        if problem.targets is None:
            return labelled_failing(session.current, session.prop, session.labels, points)
        labels = torch.tensor([session.labels[k] for k in problem.targets], dtype=torch.long)
        return LabelledInputs(torch.tensor(points, dtype=session.original.dtype), labels)

    def _margins(self, session: Session) -> Tensor:
        """The current network's margin of each failing input: its protected label's logit minus
        the largest other logit."""
        with torch.no_grad():
            return label_margins(session.current(session.failing.x), session.failing.labels)

    def _settled(self, session: Session, area: bool, phases: Phases, rng: np.random.Generator) -> bool:
        """Whether every failing input has the target margin and (area repair) PGD finds no point
        of the boxes below it; the points PGD finds join the failing inputs."""
        settings = self.settings
        low = bool((self._margins(session) < settings.attack_margin).any())
        if not area:
            return not low
        with phases("search"):
            found = attacked(session.current, session.prop, session.labels, session.failing.x,
                             settings.attack_starts, settings.attack_steps, settings.attack_margin, rng)
        session.failing = session.failing.extended(found)
        return len(found) == 0 and not low

    def _train(self, session: Session, area: bool, budget: Deadline, phases: Phases,
               rng: np.random.Generator) -> dict[str, object]:
        """Rounds of masked optimisation and PGD search until no low-margin point is left, the
        rounds or the call's time run out; then, from a settled network, rounds of
        margin-preserving recovery, each checked the same way. The candidate is the last settled
        network (a recovery round that left a low-margin point is undone at the end)."""
        settings = self.settings
        localisation = session.localisation
        assert localisation is not None
        share = min(1.0, settings.fault_share * settings.fault_growth ** session.calls)
        faults = localisation.fault_sets(share)
        kept = {name: session.original.parameter(name).detach().clone() for name in faults}
        verifiable = session.prop.regions if session.verifiable else None
        rounds, steps, satisfied = 0, 0, False
        while rounds < settings.max_rounds and not budget.expired():
            rounds += 1
            with phases("optimise"):
                steps += masked_optimisation(session.current, faults, kept, session.failing, session.clean, settings,
                                             budget, rng, verifiable)
            satisfied = self._settled(session, area, phases, rng)
            if satisfied:
                break
        recovery_rounds, recovery_steps, recovered = 0, 0, 0
        settled = {name: session.current.parameter(name).detach().clone() for name in faults}
        while satisfied and recovery_rounds < settings.recovery_rounds and not budget.expired():
            recovery_rounds += 1
            with phases("recover"):
                recovery_steps += margin_preserving_recovery(session.current, faults, kept, session.failing,
                                                             session.clean, settings, budget, rng, verifiable)
            if self._settled(session, area, phases, rng):
                recovered = recovery_rounds
                settled = {name: session.current.parameter(name).detach().clone() for name in faults}
        if recovery_rounds > recovered:
            with torch.no_grad():
                for name, values in settled.items():
                    session.current.parameter(name).copy_(values)
        layers = localisation.layers
        return {"strategy": self.name, "call": session.calls + 1,
                "layer_scores": {layer.activation: round(score, 4) for layer, score in zip(layers, localisation.scores)},
                "repaired_layers": [layers[k].activation for k in localisation.routings],
                "top_units": {layers[k].activation: routing.unit_ranking()[:5] for k, routing in localisation.routings.items()},
                "fault_weights": int(sum(int(mask.sum()) for mask in faults.values())), "fault_share": share,
                "failing_inputs": len(session.failing), "clean_inputs": len(session.clean), "rounds": rounds,
                "steps": steps, "samples_satisfied": satisfied, "recovery_rounds": recovery_rounds,
                "recovery_steps": recovery_steps, "recovery_rounds_kept": recovered, "verifiable_term": session.verifiable}


def inner_strategy() -> InnerStrategy:
    return InnerStrategy()
