"""Input-split branch and bound for low-dimensional inputs (ACAS Xu has 5).

Every box on the frontier has already been bounded with CROWN (its row bounds and their linear
functions are kept with it). An iteration takes a batch of the most suspicious open boxes (the
lowest concrete margin at their centre or weakest vertex) and branches with *lookahead*: for the
``split_candidates`` dimensions with the largest ``|coefficient| × width`` it bounds both halves,
and keeps the split whose two halves leave the smallest total open-clause deficit. The halves of
the kept split are already bounded, so closed ones are recorded at once and open ones go onto
the frontier with their bounds. Every bounded half is probed for a counterexample (its weakest
vertex, refined by projected descent, and its centre).

Lookahead costs ``2 × split_candidates`` bound computations per split box but chooses far
better splits than the coefficient score alone: on ACAS Xu 3_5 property 1 the proof tree
shrinks from about 14,000 boxes to under 200.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, LayerBounds, concretize
from ..spec import Box, Region
from .certificate import Closing, RegionCertificate, TrustedClosing, child_path
from .deadline import Deadline, paced_batch
from .falsify import descend, replay_most_violating
from .milp_search import milp_search
from .objective import RegionRows, box_tensors, clause_lower_bounds, still_open
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

# Boxes narrower than this in every dimension are not split further (left undecided).
MIN_WIDTH = 1e-12
# Counterexample search inside the leaves: descent steps in this many of the weakest boxes.
PROBE_BOXES, PROBE_STEPS = 64, 8
# Exact decision of small leaves (see _LeafMilp): the time one leaf's MILP may take, and all of
# one iteration's. A MILP faster than LEAF_MILP_FAST raises the unstable-count threshold by one;
# one slower than LEAF_MILP_SLOW lowers it below that box's count, one that times out
# LEAF_MILP_STEP below.
LEAF_MILP_SECONDS, LEAF_MILP_FAST, LEAF_MILP_SLOW, LEAF_MILP_STEP = 1.0, 0.1, 0.25, 4
# Lookahead deficits within this relative distance of the best count as tied.
LOOKAHEAD_TIE = 1e-9
# The number of boxes bounded per iteration starts here and is paced by `paced_batch` (up to
# settings.split_batch), which keeps deadline checks frequent on a slow machine.
BATCH_START = 64


@dataclass(frozen=True)
class OpenBoxes:
    """Bounded boxes with at least one open clause, and what their bounds say.

    ``row_bounds`` [N, R] are CROWN's lower bounds of every region row, ``coefficients`` [N, R, d]
    and ``constants`` [N, R] the linear functions that give them, ``open_clauses`` [N, K] the
    clauses not yet refuted on the box, ``paths`` the boxes' node paths (see certificate.py).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    row_bounds: torch.Tensor
    coefficients: torch.Tensor
    constants: torch.Tensor
    open_clauses: torch.Tensor
    unstable: torch.Tensor  # [N] activations whose input bounds straddle 0
    paths: np.ndarray
    # The boxes' pre-activation bounds, kept for their children: a child's bounds are intersected
    # with its parent's (the certificate checker re-derives them the same way, from the root down).
    layers: LayerBounds

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def rows_open(self, rows: RegionRows, settings: VerifySettings) -> torch.Tensor:
        """[N, R]: rows of an open clause whose own bound does not already refute them."""
        owner_open = self.open_clauses.gather(1, rows.owner.unsqueeze(0).expand(self.size, -1))
        return owner_open & still_open(self.row_bounds, settings.decision_margin)

    def weakest_bound(self, rows: RegionRows, settings: VerifySettings) -> tuple[torch.Tensor, torch.Tensor]:
        """Per box, the smallest bound of an open row and that row's index."""
        masked = torch.where(self.rows_open(rows, settings), self.row_bounds, torch.full_like(self.row_bounds, float("inf")))
        return masked.min(dim=1)

    def select(self, keep: torch.Tensor) -> OpenBoxes:
        index = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        return OpenBoxes(self.lower[index], self.upper[index], self.row_bounds[index], self.coefficients[index],
                         self.constants[index], self.open_clauses[index], self.unstable[index],
                         self.paths[index.cpu().numpy()], _layers_at(self.layers, index))

    @staticmethod
    def concat(parts: list[OpenBoxes]) -> OpenBoxes:
        kept = [p.layers for p in parts]
        layers = LayerBounds(tuple(
            (torch.cat([k.pre_activation[i][0] for k in kept]), torch.cat([k.pre_activation[i][1] for k in kept]))
            for i in range(len(kept[0].pre_activation))))
        return OpenBoxes(*(torch.cat([getattr(p, name) for p in parts]) for name in
                           ("lower", "upper", "row_bounds", "coefficients", "constants", "open_clauses", "unstable")),
                         np.concatenate([p.paths for p in parts]), layers)


def _layers_at(layers: LayerBounds, index: torch.Tensor) -> LayerBounds:
    return LayerBounds(tuple((l[index], u[index]) for l, u in layers.pre_activation))


class _Frontier:
    """Open boxes, the lowest priority first (see `_suspicion`).

    A proof needs every box anyway, so the order changes how fast violations are found, not the
    amount of proof work.
    """

    def __init__(self) -> None:
        self.boxes: OpenBoxes | None = None
        self.priority: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return 0 if self.boxes is None else self.boxes.size

    def push(self, boxes: OpenBoxes, priority: torch.Tensor) -> None:
        if boxes.size == 0:
            return
        if self.boxes is None or self.priority is None:
            self.boxes, self.priority = boxes, priority
        else:
            self.boxes = OpenBoxes.concat([self.boxes, boxes])
            self.priority = torch.cat([self.priority, priority])

    def pop(self, count: int) -> OpenBoxes:
        assert self.boxes is not None and self.priority is not None
        order = self.priority.argsort()
        taken, self.boxes = self.boxes.select(order[:count]), self.boxes.select(order[count:])
        self.priority = self.priority[order[count:]]
        return taken

    def weakest_bound(self, rows: RegionRows, settings: VerifySettings) -> float:
        """The smallest bound of an open row over the open boxes."""
        assert self.boxes is not None
        return float(self.boxes.weakest_bound(rows, settings)[0].min())


@dataclass(frozen=True)
class _Bounded:
    """Freshly bounded boxes: all of them, with what is needed to record their closings."""

    boxes: OpenBoxes
    closed: torch.Tensor  # [N, K] clauses newly refuted on the box
    clause_bounds: torch.Tensor  # [N, K]
    weights: torch.Tensor  # [N, K, R] row weights of each clause bound
    layers: LayerBounds

    def deficit_given(self, known: torch.Tensor) -> torch.Tensor:
        """Per box, the sum of its open clauses' negative bounds, each bound the better of this
        one and ``known`` [N, K] (0 when all are closed)."""
        bounds = torch.maximum(self.clause_bounds, known).clamp(max=0)
        return torch.where(self.boxes.open_clauses, bounds, torch.zeros_like(bounds)).sum(dim=1)

    def settle(self, index: torch.Tensor, certificate: RegionCertificate | None) -> OpenBoxes:
        """Record the closings of boxes ``index``; return those of them still open."""
        if certificate is not None:
            layers = LayerBounds(tuple((l[index], u[index]) for l, u in self.layers.pre_activation))
            _record_closings(certificate, self.boxes.paths[index.cpu().numpy()], self.closed[index],
                             self.weights[index], layers)
        chosen = self.boxes.select(index)
        return chosen.select(chosen.open_clauses.any(dim=1))


def _bound(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor, inherited: torch.Tensor,
           paths: np.ndarray, settings: VerifySettings, prior: LayerBounds | None = None) -> _Bounded:
    """Bound the boxes (intersecting with ``prior``, bounds known to hold on them); they keep their
    layer bounds for their children."""
    with torch.no_grad():
        layers = engine.layer_bounds(lower, upper, "crown", prior=prior)
        result = engine.output_bounds(lower, upper, rows.A, -rows.b, method="crown", layers=layers)
    assert result.coefficients is not None and result.constant is not None
    clause_bounds, weights = clause_lower_bounds(rows, result.lower, result.coefficients, result.constant, lower, upper)
    open_clauses = inherited & still_open(clause_bounds, settings.decision_margin)
    unstable = torch.zeros(lower.shape[0], dtype=torch.long, device=lower.device)
    for pre_lower, pre_upper in result.layers.pre_activation:
        unstable += ((pre_lower < 0) & (pre_upper > 0)).sum(dim=1)
    boxes = OpenBoxes(lower, upper, result.lower, result.coefficients, result.constant, open_clauses, unstable, paths,
                      result.layers)
    return _Bounded(boxes, inherited & ~open_clauses, clause_bounds, weights, result.layers)


def _root(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor, settings: VerifySettings,
          certificate: RegionCertificate | None) -> OpenBoxes:
    """The region's box bounded, its closings recorded; it, when still open."""
    every_clause = torch.ones(1, rows.n_clauses, dtype=torch.bool, device=lower.device)
    bounded = _bound(engine, rows, lower, upper, every_clause, np.array([""], dtype=object), settings)
    return bounded.settle(torch.zeros(1, dtype=torch.long, device=lower.device), certificate)


def _record_closings(certificate: RegionCertificate, paths: np.ndarray, closed: torch.Tensor,
                     weights: torch.Tensor, layers: LayerBounds,
                     optimised: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> None:
    """A `Closing` per box with a clause in ``closed`` [N, K]; ``optimised``: which rows' bounds
    came from α-CROWN ([N, R]) and its ReLU slopes ([N, R, n] per layer), recorded for the rows the
    closed clauses use, on the neurons unstable on the box."""
    for index in closed.any(dim=1).nonzero().flatten().tolist():
        clauses = closed[index].nonzero().flatten().tolist()
        bounds = [[l[index].tolist(), u[index].tolist()] for l, u in layers.pre_activation]
        slopes: list[list[float]] = []
        if optimised is not None:
            better, layer_slopes = optimised
            used = (weights[index, clauses] > 0).any(dim=0) & better[index]
            for row in used.nonzero().flatten().tolist():
                for layer, ((lower, upper), alpha) in enumerate(zip(layers.pre_activation, layer_slopes)):
                    unstable = ((lower[index] < 0) & (upper[index] > 0)).nonzero().flatten().tolist()
                    slopes.extend([row, layer, neuron, float(alpha[index, row, neuron])] for neuron in unstable)
        certificate.closings.append(Closing(str(paths[index]), clauses, weights[index, clauses].tolist(), bounds,
                                            slopes))


def input_split_search(engine: BoundEngine, rows: RegionRows, region: Region, settings: VerifySettings,
                       deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
                       certificate: RegionCertificate | None = None) -> SearchOutcome:
    """Decide the region; when ``certificate`` is given, every clause closing is recorded in it, a
    box decided by a leaf MILP as resting on its solver (`TrustedClosing`: the checker cannot
    re-check it)."""
    device = rows.A.device
    lower, upper = box_tensors(region.box, device)
    use_leaf_milp = engine.graph.is_piecewise_linear and settings.leaf_milp_max_unstable > 0 \
        and engine.graph.activations <= settings.milp_max_activations \
        and settings.leaf_milp_after_boxes >= 0
    leaf_milp = _LeafMilp(engine, region, settings, certificate)
    root = _root(engine, rows, lower, upper, settings, certificate)
    frontier = _Frontier()
    frontier.push(root, _suspicion(engine, rows, root, settings))
    found = _probe(engine, rows, root, settings, confirm, deadline) if root.size else None
    if found is not None:
        return SearchOutcome("sat", found, 1)
    bounded, stuck = 1, False
    candidates = max(1, min(settings.split_candidates, lower.shape[1]))
    batch = BATCH_START
    while frontier.size:
        progress.search("input-split", frontier.size, lambda: frontier.weakest_bound(rows, settings))
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded)
        started = time.monotonic()
        boxes = frontier.pop(max(1, batch // (2 * candidates)))
        if settings.leaf_alpha_steps > 0 and (certificate is None or engine.graph.is_relu_mlp):
            boxes = _alpha_refined(engine, rows, boxes, settings, certificate)
        if use_leaf_milp and bounded >= settings.leaf_milp_after_boxes:
            boxes, found = leaf_milp.decide(boxes, deadline, confirm)
            if found is not None:
                return SearchOutcome("sat", found, bounded)
        splittable = (boxes.upper - boxes.lower).max(dim=1).values > MIN_WIDTH
        stuck = stuck or not bool(splittable.all())
        children, tried = _branch(engine, rows, boxes.select(splittable), candidates, settings, certificate)
        bounded += 2 * candidates * int(splittable.sum())
        # Every bounded half, kept or not, is a small box worth probing for a counterexample.
        found = _probe(engine, rows, tried, settings, confirm, deadline) if tried.size else None
        if found is not None:
            return SearchOutcome("sat", found, bounded)
        frontier.push(children, _suspicion(engine, rows, children, settings))
        batch = paced_batch(batch, time.monotonic() - started, BATCH_START, settings.split_batch)
    return SearchOutcome("unknown" if stuck else "proven", None, bounded, solver_decided=leaf_milp.closed > 0)


def _alpha_refined(engine: BoundEngine, rows: RegionRows, boxes: OpenBoxes, settings: VerifySettings,
                   certificate: RegionCertificate | None = None) -> OpenBoxes:
    """The boxes with their row bounds improved by α-CROWN on their own layer bounds (the slopes
    of every activation optimised for each row), those it refutes dropped. With a ``certificate``
    (ReLU networks), every clause it closes is recorded with the slopes of the rows it used.

    Every iterate of α-CROWN is a sound bound, and the best per row is kept with its linear
    function, so the improved rows serve branching and counterexample probes as CROWN's did.
    Near a thin-margin optimum (a repaired network) CROWN's fixed slopes leave many boxes open that
    a few steps of slope optimisation close, at a fraction of a leaf MILP's cost.
    """
    if boxes.size == 0:
        return boxes
    with torch.no_grad():
        result = engine.output_bounds(boxes.lower, boxes.upper, rows.A, -rows.b, method="alpha-crown",
                                      alpha_steps=settings.leaf_alpha_steps, layers=boxes.layers,
                                      keep_relaxation=certificate is not None)
    assert result.coefficients is not None and result.constant is not None
    better = result.lower > boxes.row_bounds
    row_bounds = torch.where(better, result.lower, boxes.row_bounds)
    coefficients = torch.where(better.unsqueeze(-1), result.coefficients, boxes.coefficients)
    constants = torch.where(better, result.constant, boxes.constants)
    clause_bounds, weights = clause_lower_bounds(rows, row_bounds, coefficients, constants, boxes.lower, boxes.upper)
    open_clauses = boxes.open_clauses & still_open(clause_bounds, settings.decision_margin)
    if certificate is not None:
        assert result.relaxation is not None
        slopes = [result.relaxation.slopes[i] for i in engine.graph.nonlinear]
        _record_closings(certificate, boxes.paths, boxes.open_clauses & ~open_clauses, weights, boxes.layers,
                         (better, slopes))
    refined = OpenBoxes(boxes.lower, boxes.upper, row_bounds, coefficients, constants, open_clauses, boxes.unstable,
                        boxes.paths, boxes.layers)
    return refined.select(open_clauses.any(dim=1))


def candidate_halves(lower: torch.Tensor, upper: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of every box [n, d] cut at the middle of each candidate dimension ``dims``
    [n, k]: (lower, upper) [2·n·k, d], ordered [side (left, right), box, candidate]."""
    n, k = dims.shape
    d = lower.shape[1]
    low = lower.unsqueeze(1).expand(n, k, d).clone()
    high = upper.unsqueeze(1).expand(n, k, d).clone()
    index = dims.unsqueeze(2)
    middle = (torch.gather(low, 2, index) + torch.gather(high, 2, index)) / 2
    left_upper, right_lower = high.clone(), low.clone()
    left_upper.scatter_(2, index, middle)
    right_lower.scatter_(2, index, middle)
    return torch.cat([low, right_lower]).reshape(-1, d), torch.cat([left_upper, high]).reshape(-1, d)


def _branch(engine: BoundEngine, rows: RegionRows, boxes: OpenBoxes, candidates: int, settings: VerifySettings,
            certificate: RegionCertificate | None) -> tuple[OpenBoxes, int]:
    """Split every box in two along the best of its candidate dimensions (see the module doc).

    Returns the open halves of the kept splits, and the open halves of all candidate splits.
    """
    n = boxes.lower.shape[0]
    if n == 0:
        return boxes, boxes
    width = boxes.upper - boxes.lower
    score = (boxes.coefficients.abs() * width.unsqueeze(1) * boxes.rows_open(rows, settings).unsqueeze(-1)).sum(dim=1)
    score = torch.where(width > MIN_WIDTH, score + 1e-30 * width, torch.full_like(score, -1.0))
    dims = score.topk(candidates, dim=1).indices  # [n, k]
    child_lower, child_upper = candidate_halves(boxes.lower, boxes.upper, dims)
    inherited = boxes.open_clauses.unsqueeze(1).expand(n, candidates, -1).repeat(2, 1, 1).reshape(child_lower.shape[0], -1)
    dims_flat = dims.flatten().tolist()
    paths = np.array([child_path(p, dim, side) for side in (False, True)
                      for p, dim in zip(np.repeat(boxes.paths, candidates), dims_flat)], dtype=object)
    parent = torch.arange(n, device=dims.device).repeat_interleave(candidates).repeat(2)
    bounded = _bound(engine, rows, child_lower, child_upper, inherited, paths, settings, _layers_at(boxes.layers, parent))
    # CROWN is not monotone: a half can bound worse than its parent. The parent's linear bounds
    # hold on the halves too, so the choice judges each half by the better of the two.
    parent_coefficients, parent_constants = boxes.coefficients[parent], boxes.constants[parent]
    parent_rows = concretize(parent_coefficients, parent_constants, child_lower, child_upper)
    parent_clauses, _ = clause_lower_bounds(rows, parent_rows, parent_coefficients, parent_constants, child_lower, child_upper)
    deficit = bounded.deficit_given(parent_clauses).reshape(2, n, candidates).sum(dim=0)
    # A dimension already too narrow to split is no candidate (its "halves" equal the box).
    deficit = torch.where(width.gather(1, dims) > MIN_WIDTH, deficit, torch.full_like(deficit, -torch.inf))
    # Near-ties (rounding noise) go to the candidate with the better coefficient score, which
    # comes first: otherwise noise can keep halving one dimension where no split helps yet.
    top = deficit.max(dim=1, keepdim=True).values
    best = (deficit >= top - LOOKAHEAD_TIE * (1 + top.abs())).to(torch.int8).argmax(dim=1)
    chosen = torch.arange(n, device=best.device) * candidates + best
    halves = bounded.settle(torch.cat([chosen, chosen + n * candidates]), certificate)
    tried = bounded.boxes
    return halves, tried.select(tried.open_clauses.any(dim=1))


class _LeafMilp:
    """Exact decision of small boxes by MILP.

    Near a tight optimum CROWN can leave a box with a few dozen unstable ReLUs open through many
    more splits, while a MILP over those binaries often settles it in milliseconds. Whether it
    does depends on the network and the box, so the unstable-count threshold adapts: a slow MILP
    lowers it below that box's count, a fast one raises it again (up to
    ``settings.leaf_milp_max_unstable``). All leaves of one iteration together get
    about `LEAF_MILP_SECONDS` too; a box the MILP does not settle stays open and is split.
    The MILPs are solved in waves of ``settings.leaf_milp_workers`` at once (the solvers run
    outside Python's interpreter lock); the threshold adapts after each wave.
    """

    def __init__(self, engine: BoundEngine, region: Region, settings: VerifySettings,
                 certificate: RegionCertificate | None = None) -> None:
        self.engine, self.region, self.settings = engine, region, settings
        self.certificate = certificate  # gets a `TrustedClosing` per box decided
        self.max_unstable = settings.leaf_milp_max_unstable
        self.closed = 0  # boxes whose proof is a MILP solver's infeasibility claim
        self.workers = settings.leaf_milp_workers or max(1, torch.get_num_threads())

    def decide(self, boxes: OpenBoxes, deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
               ) -> tuple[OpenBoxes, Counterexample | None]:
        """The boxes left open, or a counterexample confirmed by ``confirm``."""
        eligible = (boxes.unstable <= self.max_unstable).nonzero().flatten()
        if eligible.numel() == 0:
            return boxes, None
        layers = _layers_at(boxes.layers, eligible)  # the boxes' own bounds, parents' included: tighter big-M
        closed = torch.zeros(boxes.size, dtype=torch.bool, device=boxes.lower.device)
        started = time.monotonic()

        def solve(item: tuple[int, int]) -> tuple[SearchOutcome, float, dict[int, str]]:
            j, index = item  # row in `layers`, box index
            leaf = Region(Box(boxes.lower[index].cpu().numpy(), boxes.upper[index].cpu().numpy()), self.region.clauses)
            leaf_layers = LayerBounds(tuple((l[j:j + 1], u[j:j + 1]) for l, u in layers.pre_activation))
            open_clauses = boxes.open_clauses[index].nonzero().flatten().tolist()
            solve_started = time.monotonic()
            deciders: dict[int, str] = {}
            outcome = milp_search(self.engine, leaf, open_clauses, leaf_layers, self.settings,
                                  Deadline(min(LEAF_MILP_SECONDS, deadline.remaining())), confirm, [], deciders)
            return outcome, time.monotonic() - solve_started, deciders

        queue = deque(enumerate(eligible.tolist()))
        while queue and time.monotonic() - started <= LEAF_MILP_SECONDS and not deadline.expired():
            wave: list[tuple[int, int]] = []
            while queue and len(wave) < self.workers:
                item = queue.popleft()
                if int(boxes.unstable[item[1]]) <= self.max_unstable:
                    wave.append(item)
            solved = list(_leaf_pool(self.workers).map(solve, wave)) if len(wave) > 1 else [solve(w) for w in wave]
            for (_, index), (outcome, took, deciders) in zip(wave, solved):
                if outcome.status == "sat":
                    return boxes, outcome.counterexample
                closed[index] = outcome.status == "proven"
                if self.certificate is not None and bool(closed[index]):
                    self.certificate.closings.append(TrustedClosing(
                        str(boxes.paths[index]), sorted(deciders), "+".join(sorted(set(deciders.values())))))
                self.closed += int(closed[index])
                self._adapt(int(boxes.unstable[index]), outcome.status, took)
        return boxes.select(~closed), None

    def _adapt(self, unstable: int, status: str, took: float) -> None:
        if status == "timeout":
            self.max_unstable = min(self.max_unstable, unstable - LEAF_MILP_STEP)
        elif took > LEAF_MILP_SLOW:
            self.max_unstable = min(self.max_unstable, unstable - 1)
        elif took < LEAF_MILP_FAST:
            self.max_unstable = min(self.max_unstable + 1, self.settings.leaf_milp_max_unstable)


@functools.cache
def _leaf_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the process: its threads keep their solver environments (a Gurobi
    environment per thread costs a licence check to start)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leaf-milp")


def _weakest_vertex(rows: RegionRows, boxes: OpenBoxes, settings: VerifySettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box, its weakest open row's bound and the vertex minimising that row's linear bound."""
    weakest_bound, weakest = boxes.weakest_bound(rows, settings)
    weakest_coef = boxes.coefficients[torch.arange(boxes.size, device=boxes.lower.device), weakest]
    return weakest_bound, torch.where(weakest_coef > 0, boxes.lower, boxes.upper)


def _suspicion(engine: BoundEngine, rows: RegionRows, boxes: OpenBoxes, settings: VerifySettings) -> torch.Tensor:
    """Per box, the smaller concrete margin at its centre and at its weakest vertex: boxes that
    come close to a violation are refined first (isolated violations are found far sooner than
    by refining the loosest bounds first)."""
    if boxes.size == 0:
        return boxes.row_bounds.new_zeros(0)
    _, vertex = _weakest_vertex(rows, boxes, settings)
    with torch.no_grad():
        margins = rows.margin(engine.graph.forward(torch.cat([(boxes.lower + boxes.upper) / 2, vertex])))
    return torch.minimum(margins[:boxes.size], margins[boxes.size:])


def _probe(engine: BoundEngine, rows: RegionRows, boxes: OpenBoxes, settings: VerifySettings,
           confirm: Callable[[np.ndarray], Counterexample | None], deadline: Deadline) -> Counterexample | None:
    """Look for a counterexample in the open boxes: the weakest vertex of each, refined by a few
    steps of projected descent in the most promising boxes; replay violators."""
    weakest_bound, vertex = _weakest_vertex(rows, boxes, settings)
    promising = weakest_bound.argsort()[:PROBE_BOXES]
    refined = descend(engine.graph, rows, vertex[promising], boxes.lower[promising], boxes.upper[promising],
                      PROBE_STEPS, deadline)
    points = torch.cat([(boxes.lower + boxes.upper) / 2, vertex, refined])
    return replay_most_violating(engine.graph, points, rows.margin, confirm, 8)


def open_cover(engine: BoundEngine, rows: RegionRows, region: Region, settings: VerifySettings,
               deadline: Deadline, max_boxes: int) -> OpenBoxes:
    """Boxes covering every point of the region where CROWN cannot refute a clause: the region
    minus the union of these boxes is proven safe.

    The same splits as `input_split_search`, without counterexample search and without stopping at
    a violation: the boxes whose bounds fall furthest short of refuting a clause are split first
    (both halves kept, closed ones dropped) while the cover has fewer than ``max_boxes`` boxes and
    time is left. Repair uses it to localise: what is outside the cover needs no change, and a
    box's shortfall is what its patch must make up (CROWN on a large ACAS Xu box falls short by
    hundreds where the true violation is below 0.05).
    """
    lower, upper = box_tensors(region.box, rows.A.device)
    cover = _root(engine, rows, lower, upper, settings, None)
    candidates = max(1, min(settings.split_candidates, lower.shape[1]))
    while 0 < cover.size < max_boxes and not deadline.expired():
        clause_bounds = rows.clause_margins(cover.row_bounds).masked_fill(~cover.open_clauses, torch.inf)
        shortfall = -clause_bounds.min(dim=1).values
        splittable = (cover.upper - cover.lower).max(dim=1).values > MIN_WIDTH
        count = min(int(splittable.sum()), max_boxes - cover.size)
        if count == 0:
            break
        order = torch.where(splittable, shortfall, torch.full_like(shortfall, -torch.inf)).argsort(descending=True)
        chosen = torch.zeros(cover.size, dtype=torch.bool, device=lower.device)
        chosen[order[:count]] = True
        children, _ = _branch(engine, rows, cover.select(chosen), candidates, settings, None)
        cover = OpenBoxes.concat([cover.select(~chosen), children])
    return cover
