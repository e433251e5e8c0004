"""``--strategy auto`` (the default of check-and-fix): a portfolio chosen from what the network and
the property are, run in turn within the budget by `StrategySequence` (each member's candidates are
exported and verified by the loop like any other strategy's)."""

from __future__ import annotations

from ..errors import InputError, UnsupportedError
from ..network import Network
from ..spec import Spec
from ..verify import Deadline
from .inner.labels import protected_labels
from .reassure.regions import relu_network_of
from .registry import strategy_named
from .sequence import StrategySequence
from .strategy import RepairCandidate, RepairProblem

# Inputs up to which the property's boxes can be covered by input splitting (the verifier's input
# split, `reassure-boxes`' cover, BIRDNN's certified partition all bisect input boxes).
LOW_DIMENSION = 16
# Share of the time left that the first member owns: `reassure-boxes`' cover of the boxes takes a
# share of its time, and a coarser cover is harder to prove (ACAS Xu N2,9 property 2 was proven by
# it alone in 600 s, but not in half of that); the patching member of a suite gets as much, since
# patches local to each property's boxes cannot break another property and weight changes can.
FIRST_SHARE = 0.7
PATCH_SHARE_SUITE = 0.7
# Share of the time left that ``inner`` owns when it leads a classifier suite: it proves the MNIST
# suites within a fraction of their budget, and the members after it need room of their own.
INNER_SHARE_SUITE = 0.6


def portfolio_for(n_inputs: int, piecewise_linear: bool, suite: bool,
                  classifier: bool = False) -> tuple[tuple[str, float | None], ...]:
    """The members of ``auto``, in order, each with its share of the time left when it starts
    (None: the last member, which keeps whatever is left). The rule:

    * a network that is not a ReLU network of dense layers (``piecewise_linear`` False: REASSURE's
      patches do not apply) gets ``birdnn`` alone (retraining, then fine-tuning);
    * a ReLU network with at most `LOW_DIMENSION` inputs gets ``reassure-boxes`` first (patches on
      the boxes input splitting cannot prove: every linear region untouched outside them and their
      bands; ACAS Xu N2,1 property 2 proven with no advisory changed), then ``birdnn``;
    * a ReLU network with more inputs gets ``birdnn`` first (the box cover does not scale there,
      and retraining proves robustness properties fast: the shipped digits classifier in seconds
      where ``reassure`` was not proven in minutes), then ``reassure`` (patches on linear regions);
    * for a suite of properties the patching member comes first whatever the dimension and owns
      more time, since patches stay inside each property's boxes and cannot break the others;
    * but a suite of classifier properties (``classifier``: every region protects one label) on
      more than `LOW_DIMENSION` inputs gets ``inner`` first, with `INNER_SHARE_SUITE` of the time,
      then the members above: on the MNIST suites it proved every property of the MLP and
      backdoor suites keeping the accuracy, where ``birdnn`` proved none and REASSURE's
      point-wise patches grow the file by megabytes per point.

    The first member owns `FIRST_SHARE` of the time (`PATCH_SHARE_SUITE` for a suite).
    """
    if n_inputs < 1:
        raise ValueError(f"a network needs at least one input, got {n_inputs}")
    if suite and classifier and n_inputs > LOW_DIMENSION:
        return (("inner", INNER_SHARE_SUITE), *portfolio_for(n_inputs, piecewise_linear, suite))
    if not piecewise_linear:
        return (("birdnn", None),)
    if n_inputs <= LOW_DIMENSION:
        return (("reassure-boxes", PATCH_SHARE_SUITE if suite else FIRST_SHARE), ("birdnn", None))
    if suite:
        return (("reassure", PATCH_SHARE_SUITE), ("birdnn", None))
    return (("birdnn", FIRST_SHARE), ("reassure", None))


def is_classifier_property(spec: Spec) -> bool:
    """Whether every region of ``spec`` protects one label (``inner``'s properties)."""
    try:
        protected_labels(spec)
    except UnsupportedError:
        return False
    return True


def is_relu_network(network: Network) -> bool:
    """Whether REASSURE's patches apply: linear nodes and ReLUs only."""
    try:
        relu_network_of(network)
    except InputError:
        return False
    return True


class AutoStrategy:
    """Chooses its portfolio (`portfolio_for`) at the first call of a run, from the network and
    the property it is handed; ``suite``: the caller repairs a suite of properties at once."""

    name = "auto"

    def __init__(self, suite: bool = False) -> None:
        self.suite = suite
        self._sequence: StrategySequence | None = None
        self._original_id: int | None = None

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        if self._sequence is None or self._original_id != id(problem.original):
            members = portfolio_for(problem.spec.n_inputs, is_relu_network(problem.original), self.suite,
                                    is_classifier_property(problem.spec))
            self._sequence = StrategySequence(self.name, [strategy_named(name) for name, _ in members],
                                              [share for _, share in members[:-1] if share is not None])
            self._original_id = id(problem.original)
        return self._sequence.repair(problem, previous, deadline)

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        return self._sequence.polish(problem, proven, deadline) if self._sequence is not None else None

    def members_report(self) -> list[dict[str, object]]:
        return self._sequence.members_report() if self._sequence is not None else []

    def share_left(self) -> float | None:
        """`SharedBudget`: a member's candidates are verified within its share, so that an
        undecided verification cannot eat the time of the members after it."""
        return self._sequence.time_left_in_share() if self._sequence is not None else None


def auto_strategy() -> AutoStrategy:
    return AutoStrategy()


def auto_suite_strategy() -> AutoStrategy:
    return AutoStrategy(suite=True)
