"""ReLU-split branch and bound (β-CROWN style) for ReLU networks with many inputs (MNIST: 784).

Works on any ReLU graph (`BoundGraph.is_relu_network`: dense, convolutional, residual); every
bound comes from the graph engine (`bounds.engine`), which has no notion of a split:

* A domain is the region's input box plus sign constraints ``s_i·z_i >= 0`` on some unstable ReLU
  inputs ``z_i`` (``s_i = +1``: active, ``-1``: inactive). It is stored as bounds of every ReLU
  input valid on the domain, with each split applied to them: an active neuron's lower bound is
  raised to 0, an inactive one's upper bound lowered to 0. Those bounds go to the engine as its
  ``layers``, so a split neuron is relaxed exactly (identity or zero).
* Its bound is the engine's α-CROWN bound with ``interval_multipliers``: a multiplier ``β >= 0`` on
  a neuron's bound at 0 adds ``-β·s_i·z_i(x)`` (never positive on the domain) to the objective,
  which is β-CROWN's split term; the right side is bounded over the whole box. Multipliers on the
  other bounds would be sound the same way, but in a dozen steps they cost more than they gain, so
  only the bounds of neurons unstable on the box and stable on the domain carry one (a mask). Any
  slopes α in [0, 1] and any β >= 0 give a sound bound, so both are optimised and the best bound
  seen is kept.
* Warm starts: each domain keeps the slopes and multipliers of its best bound; both children
  start from them, with the multipliers of the neuron just split reset to zero.

Intermediate bounds: each domain carries its own bounds of every ReLU input, starting from the
root box's (α-CROWN); a child inherits its parent's (valid: it lies inside the parent), and its
bound is never below its parent's. A child whose bound stalls (`STALL_GAIN`) has its layers
re-bounded by CROWN under its splits (`BoundEngine.layer_bounds` with its bounds as the prior,
so the result is intersected with what it had) and is bounded again: otherwise splitting early
neurons of a deep network never tightens its later layers. A domain whose bounds cross (lower
above upper) contains no point of the box and is closed.

Certificates (``leaves`` given to `relu_split_search`): every domain carries its splits, its
slopes and multipliers are kept in float64, and every child is re-bounded by CROWN under its
splits and the root's bounds alone (not intersected with its parent's bounds), so the checker,
which derives CROWN bounds with the splits and the root bounds (its own, tightened by the
certificate's lemmas) as clamps, finds the bounds the verifier used.
Every closed domain is recorded (`ReluLeafRecord`): its splits, and for every neuron unstable on
the root box or on the domain its bounds, slope and multipliers.

Branching scores, per domain, every unsplit unstable neuron by what its upper relaxation costs the
bound (a BaBSR-like score, from the λ that reaches each ReLU's output in the domain's first CROWN
pass). With one candidate (``VerifySettings.relu_split_candidates``) the best-scored neuron is split;
with k > 1, filtered smart branching: the k best-scored neurons of each open domain are each split
tentatively, both children bounded by one CROWN pass with the domain's optimised slopes and
multipliers (batched over domains × candidates × 2 children), and the neuron whose worse child
bounds highest is split (ties: the better score). Branching only picks the neuron; every child is
bounded afresh, so no choice can make a bound unsound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundRelu, LayerBounds
from ..bounds.engine import Relaxation
from .certificate import ReluLeafRecord
from .deadline import Deadline, paced_batch
from .falsify import replay_most_violating
from .objective import still_open
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

logger = logging.getLogger(__name__)
Tensor = torch.Tensor
# α-CROWN steps on (α, β) per batch of domains, and the slopes' learning rate (the engine's
# multipliers take half of it).
OPTIMISE_STEPS, ALPHA_LR = 12, 0.1
BATCH_START = 32
# A child whose own bound gained less than this fraction of its parent's shortfall below zero has
# stalled: splitting alone no longer tightens it, so its intermediate bounds are re-bounded under
# its splits and it is bounded again. Re-bounding only the stalled children keeps the cost of
# deep networks' domains low while still tightening their later layers.
STALL_GAIN = 0.02
# Memory for open domains (two float64 bounds, a float32 slope and two float32 multipliers per
# neuron: 28 bytes per neuron and domain); beyond it the search gives up, keeping an instance
# under ~4 GB.
MAX_FRONTIER_BYTES = 1.5e9
BYTES_PER_NEURON = 28
# A domain is empty only when some neuron's bounds cross by more than this (as `decision_margin`).
EMPTY_MARGIN = 1e-9
# Filtered smart branching bounds the tentative children of at most this many domains at once
# (each domain has 2k of them), so its memory stays that of a few thousand domains.
CANDIDATE_DOMAINS_PER_PASS = 256


@dataclass
class Domains:
    """A batch of domains: per ReLU node (`BoundGraph.nonlinear` order) the bounds of its input
    with the splits applied, the warm-start slopes and multipliers; each bound and branching neuron."""

    pre_lower: list[Tensor]  # [D, n_k] float64
    pre_upper: list[Tensor]
    slopes: list[Tensor]  # [D, n_k] float32
    multipliers: list[Tensor]  # [D, n_k, 2] float32 (on the upper, lower bound)
    lower: Tensor  # [D] float64 bound of the objective
    branch: Tensor  # [D] flat neuron index (over all ReLU nodes) to split next; -1: none left
    # per domain its splits (flat neuron index, active), when certifying
    splits: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def _parts(self) -> list[list[Tensor]]:
        return [self.pre_lower, self.pre_upper, self.slopes, self.multipliers]

    def select(self, index: Tensor) -> Domains:
        splits = None if self.splits is None else self.splits[index.cpu().numpy()]
        return Domains(*[[t[index] for t in part] for part in self._parts()], self.lower[index], self.branch[index],
                       splits)

    def replace(self, index: Tensor, other: Domains) -> Domains:
        """These domains with rows ``index`` replaced by ``other``'s."""
        def put(mine: Tensor, theirs: Tensor) -> Tensor:
            mine = mine.clone()
            mine[index] = theirs
            return mine

        parts = [[put(t, u) for t, u in zip(mine, theirs)] for mine, theirs in zip(self._parts(), other._parts())]
        splits = self.splits
        if splits is not None and other.splits is not None:
            splits = splits.copy()
            splits[index.cpu().numpy()] = other.splits
        return Domains(*parts, put(self.lower, other.lower), put(self.branch, other.branch), splits)

    @staticmethod
    def join(parts: list[Domains]) -> Domains:
        fields = zip(*[p._parts() for p in parts])
        splits = None if parts[0].splits is None else np.concatenate([p.splits for p in parts])  # type: ignore[misc]
        return Domains(*[[torch.cat(layer) for layer in zip(*field)] for field in fields],
                       torch.cat([p.lower for p in parts]), torch.cat([p.branch for p in parts]), splits)

    def with_layers(self, layers: LayerBounds) -> Domains:
        return Domains([l for l, _ in layers.pre_activation], [u for _, u in layers.pre_activation],
                       self.slopes, self.multipliers, self.lower, self.branch, self.splits)


@dataclass(frozen=True)
class BatchBound:
    domains: Domains  # with their optimised slopes and multipliers, bound and branching neuron
    own: Tensor  # [D] each domain's own bound, before its parent's is taken into account
    vertex: Tensor  # [D, n_in]: minimiser of the final linear lower bound over the box
    scores: Tensor  # [D, N] branching score per flat neuron index (-1: not splittable)


class ReluSplitter:
    """Bounds, branches and re-bounds domains of one objective ``c·f(x) + offset`` over one box."""

    def __init__(self, engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor,
                 box_upper: Tensor, pre_bounds: list[tuple[Tensor, Tensor]], certifying: bool = False,
                 candidates: int = 1) -> None:
        """``pre_bounds``: bounds of every ReLU's input on the box (`BoundGraph.nonlinear` order);
        ``certifying``: see the module doc; ``candidates``: neurons tried per domain by
        `filtered_branching` (1: the best-scored one, no trial)."""
        self.engine = engine
        self.candidates = candidates
        self.certifying = certifying
        self.parameter_dtype = torch.float64 if certifying else torch.float32
        self.splittable = [((l < 0) & (u > 0)).reshape(1, -1) for l, u in pre_bounds]
        self.root_bounds = [(l.reshape(1, -1), u.reshape(1, -1)) for l, u in pre_bounds]
        self.C = objective.reshape(1, -1)
        self.d = torch.tensor([offset], dtype=box_lower.dtype, device=box_lower.device)
        self.box_lower, self.box_upper = box_lower.reshape(1, -1), box_upper.reshape(1, -1)
        self.nodes = engine.graph.nonlinear

    def _box(self, count: int) -> tuple[Tensor, Tensor]:
        return self.box_lower.expand(count, -1), self.box_upper.expand(count, -1)

    def bound(self, domains: Domains, start: bool = True) -> BatchBound:
        """Lower bounds of the objective on each domain, (α, β) optimised from the domains' own
        (``start``) or from CROWN's slopes and zero multipliers; each domain's bound is the better
        of its own and its parent's ``domains.lower`` (a child lies inside its parent)."""
        box_lower, box_upper = self._box(domains.size)
        initial = Relaxation({i: s.unsqueeze(1) for i, s in zip(self.nodes, domains.slopes)},
                             {i: m.unsqueeze(1) for i, m in zip(self.nodes, domains.multipliers)}) if start else None
        result = self.engine.output_bounds(box_lower, box_upper, self.C, self.d, method="alpha-crown",
                                           alpha_steps=OPTIMISE_STEPS, alpha_lr=ALPHA_LR,
                                           layers=LayerBounds(tuple(zip(domains.pre_lower, domains.pre_upper))),
                                           interval_multipliers=self._multiplier_masks(domains),
                                           start=initial, keep_relaxation=True,
                                           record_coefficients=True)
        assert result.coefficients is not None and result.relaxation is not None
        assert result.node_coefficients is not None
        own = result.lower[:, 0]
        kept = result.relaxation
        slopes = [kept.slopes[i][:, 0].to(self.parameter_dtype) if i in kept.slopes else s
                  for i, s in zip(self.nodes, domains.slopes)]
        multipliers = [kept.multipliers[i][:, 0].to(self.parameter_dtype) if i in kept.multipliers else m
                       for i, m in zip(self.nodes, domains.multipliers)]
        scores = self._scores(domains, [result.node_coefficients[i][:, 0] for i in self.nodes])
        bounded = Domains(domains.pre_lower, domains.pre_upper, slopes, multipliers,
                          torch.maximum(own, domains.lower), _best_scored(scores), domains.splits)
        vertex = torch.where(result.coefficients[:, 0] > 0, box_lower, box_upper)
        return BatchBound(bounded, own, vertex, scores)

    def _multiplier_masks(self, domains: Domains) -> dict[int, Tensor]:
        """[D, 1, n, 2] per ReLU node: multipliers on the bounds that splits put at 0 (an upper bound
        <= 0 or a lower bound >= 0 of a neuron unstable on the whole box: a split, or a neuron its
        re-bounding made stable). The other bounds keep no multiplier: they slow the optimisation
        down more than they tighten it."""
        return {i: (torch.stack([upper <= 0, lower >= 0], dim=-1) & splittable.unsqueeze(-1)).unsqueeze(1)
                for i, lower, upper, splittable in zip(self.nodes, domains.pre_lower, domains.pre_upper,
                                                       self.splittable)}

    def _scores(self, domains: Domains, lams: list[Tensor]) -> Tensor:
        """[D, N]: per domain and flat neuron index, the branching score of each unsplit unstable
        neuron, -1 for the others (a split neuron has a bound at 0, so it is no longer unstable).

        Score: what the neuron's upper-line intercept costs the bound (``-min(λ, 0)·intercept``), plus
        a small term in ``|λ|·width`` that ranks neurons whose λ is positive (lower line in use).
        """
        scores = []
        for lower, upper, lam in zip(domains.pre_lower, domains.pre_upper, lams):
            _, intercept = BoundRelu.upper_line(lower, upper)
            unstable = (lower < 0) & (upper > 0)
            score = -lam.clamp(max=0) * intercept + 1e-3 * lam.abs() * (upper - lower)
            scores.append(torch.where(unstable, score, torch.full_like(score, -1.0)))
        if not scores:
            return domains.lower.new_full((domains.size, 0), -1.0)
        return torch.cat(scores, dim=1)

    def filtered_branching(self, domains: Domains, scores: Tensor) -> Domains:
        """The domains with their branching neuron chosen by filtered smart branching (module doc)
        among their `candidates` best-scored neurons (``scores`` as `_scores`)."""
        count = min(self.candidates, scores.shape[1])
        if count <= 1 or domains.size == 0:
            return domains
        branch = torch.cat([self._tried_branching(domains.select(part), scores[part], count)
                            for part in torch.arange(domains.size, device=scores.device).split(CANDIDATE_DOMAINS_PER_PASS)])
        return replace(domains, branch=branch)

    def _tried_branching(self, domains: Domains, scores: Tensor, count: int) -> Tensor:
        top_scores, top = scores.topk(count, dim=1)  # [D, k], best score first
        tried = replace(domains.select(torch.arange(domains.size, device=top.device).repeat_interleave(count)),
                        branch=top.reshape(-1), splits=None)
        worse = self.child_bounds(tried).reshape(2, domains.size, count).min(dim=0).values
        worse = worse.masked_fill((top_scores < 0) | worse.isnan(), -torch.inf)
        best = worse.max(dim=1, keepdim=True).values
        rank = torch.arange(count, device=top.device).expand_as(worse)
        choice = torch.where(worse >= best, rank, count).min(dim=1, keepdim=True).values
        branch = top.gather(1, choice).squeeze(1)
        return torch.where(top_scores[:, 0] >= 0, branch, torch.full_like(branch, -1))

    def child_bounds(self, domains: Domains) -> Tensor:
        """[2D]: one CROWN pass's bound of each domain's children (`_children` order: all active
        ones, then all inactive ones) with the domain's slopes and multipliers, its intermediate
        bounds otherwise unchanged."""
        children = _children(domains)
        box_lower, box_upper = self._box(children.size)
        fixed = Relaxation({i: s.unsqueeze(1) for i, s in zip(self.nodes, children.slopes)},
                           {i: m.unsqueeze(1) for i, m in zip(self.nodes, children.multipliers)})
        with torch.no_grad():
            result = self.engine.output_bounds(box_lower, box_upper, self.C, self.d, method="crown",
                                               layers=LayerBounds(tuple(zip(children.pre_lower, children.pre_upper))),
                                               start=fixed)
        return result.lower[:, 0]

    def rebound(self, domains: Domains) -> tuple[Domains, Tensor]:
        """The domains with every ReLU input re-bounded by CROWN under their splits (intersected with
        their bounds: both hold on the domain), and a [D] mask of domains shown empty (some bound
        crossing by more than `EMPTY_MARGIN`, so float rounding cannot close a domain with points)."""
        box_lower, box_upper = self._box(domains.size)
        prior = LayerBounds(tuple(zip(domains.pre_lower, domains.pre_upper)) if not self.certifying
                            else tuple(self._split_clamps(domains)))
        with torch.no_grad():
            layers = self.engine.layer_bounds(box_lower, box_upper, "crown", prior=prior)
        empty = torch.zeros(domains.size, dtype=torch.bool, device=box_lower.device)
        for lower, upper in layers.pre_activation:
            empty |= (lower > upper + EMPTY_MARGIN).any(dim=1)
        return domains.with_layers(layers), empty

    def _split_clamps(self, domains: Domains) -> list[tuple[Tensor, Tensor]]:
        """Per ReLU node, bounds that say only the domains' splits and the root's bounds: 0 on a
        split side (a split neuron is unstable on the root box), the root's elsewhere."""
        assert domains.splits is not None
        offsets = np.cumsum([0] + [l.shape[1] for l in domains.pre_lower])
        clamps = [(l.expand(domains.size, -1).clone(), u.expand(domains.size, -1).clone()) for l, u in self.root_bounds]
        for row, splits in enumerate(domains.splits):
            for flat, active in splits:
                k = int(np.searchsorted(offsets, flat, side="right")) - 1
                clamps[k][0 if active else 1][row, flat - int(offsets[k])] = 0.0
        return clamps

    def leaf_records(self, domains: Domains) -> list[ReluLeafRecord]:
        """The certificate's record of each domain (see the module doc)."""
        assert domains.splits is not None
        offsets = np.cumsum([0] + [l.shape[1] for l in domains.pre_lower])
        records = []
        layers = [(l.cpu().numpy(), u.cpu().numpy(), a.cpu().numpy(), m.cpu().numpy(), s.reshape(-1).cpu().numpy())
                  for l, u, a, m, s in zip(domains.pre_lower, domains.pre_upper, domains.slopes, domains.multipliers,
                                           self.splittable)]
        for row, splits in enumerate(domains.splits):
            split_list = []
            for flat, active in splits:
                k = int(np.searchsorted(offsets, flat, side="right")) - 1
                split_list.append([k, int(flat - offsets[k]), int(active)])
            neurons = []
            for k, (lower, upper, alpha, beta, splittable) in enumerate(layers):
                recorded = splittable | ((lower[row] < 0) & (upper[row] > 0)) | (beta[row] != 0).any(axis=1)
                for n in np.flatnonzero(recorded):
                    neurons.append([k, int(n), float(lower[row, n]), float(upper[row, n]), float(alpha[row, n]),
                                    float(beta[row, n, 0]), float(beta[row, n, 1])])
            records.append(ReluLeafRecord(split_list, neurons))
        return records


def _best_scored(scores: Tensor) -> Tensor:
    """Per domain, the flat index of the neuron with the largest score (-1: no splittable neuron)."""
    if scores.shape[1] == 0:
        return torch.full((scores.shape[0],), -1, dtype=torch.long, device=scores.device)
    value, index = scores.max(dim=1)
    return torch.where(value >= 0, index, torch.full_like(index, -1))


def _tuples(items: list[tuple]) -> np.ndarray:
    """A one-dimensional object array of the tuples (numpy would make a ragged list 2-D)."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def _children(domains: Domains) -> Domains:
    """Two children per domain: its branching neuron active (lower bound 0) and inactive (upper
    bound 0); the neuron's multipliers start again from zero."""
    offsets = np.cumsum([0] + [l.shape[1] for l in domains.pre_lower])
    both = Domains.join([domains, domains])
    active = torch.arange(both.size, device=both.branch.device) < domains.size
    for k in range(len(both.pre_lower)):
        inside = (both.branch >= offsets[k]) & (both.branch < offsets[k + 1])
        if not bool(inside.any()):
            continue
        rows, neurons = inside.nonzero().flatten(), both.branch[inside] - int(offsets[k])
        up, down = active[inside], ~active[inside]
        both.pre_lower[k] = both.pre_lower[k].clone()
        both.pre_upper[k] = both.pre_upper[k].clone()
        both.pre_lower[k][rows[up], neurons[up]] = 0.0
        both.pre_upper[k][rows[down], neurons[down]] = 0.0
        both.multipliers[k] = both.multipliers[k].clone()
        both.multipliers[k][rows, neurons] = 0.0
    if both.splits is not None:
        branch = both.branch.cpu().numpy()
        both.splits = _tuples([path + ((int(branch[i]), i < domains.size),) for i, path in enumerate(both.splits)])
    return both


def relu_split_search(engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                      pre_bounds: list[tuple[Tensor, Tensor]], settings: VerifySettings, deadline: Deadline,
                      margin_of: Callable[[Tensor], Tensor], confirm: Callable[[np.ndarray], Counterexample | None],
                      leaves: list[ReluLeafRecord] | None = None) -> SearchOutcome:
    """Prove ``objective·f(x) + offset > 0`` on the box, or find a confirmed counterexample.

    ``pre_bounds``: bounds of every ReLU's input on the box (`BoundGraph.nonlinear` order; CROWN's
    when certifying). ``margin_of`` maps network outputs to the region's violation margin (<= 0:
    violation), used to rank candidate points before they are replayed in onnxruntime by
    ``confirm``. ``leaves``: filled with the closed domains' records for a certificate.
    """
    splitter = ReluSplitter(engine, objective, offset, box_lower, box_upper, pre_bounds, leaves is not None,
                            settings.relu_split_candidates)
    lower = box_lower.reshape(-1)
    device, dtype = lower.device, lower.dtype
    sizes = [int(l.numel()) for l, _ in pre_bounds]
    root = Domains([l.reshape(1, -1).to(dtype) for l, _ in pre_bounds], [u.reshape(1, -1).to(dtype) for _, u in pre_bounds],
                   [torch.zeros(1, n, dtype=splitter.parameter_dtype, device=device) for n in sizes],
                   [torch.zeros(1, n, 2, dtype=splitter.parameter_dtype, device=device) for n in sizes],
                   torch.full((1,), -torch.inf, dtype=dtype, device=device),
                   torch.zeros(1, dtype=torch.long, device=device),
                   None if leaves is None else _tuples([()]))
    frontier, vertex = _bound_and_filter(splitter, root, settings, leaves, start=False)
    bounded_count, batch, stuck = 1, BATCH_START, False
    found = replay_most_violating(engine.graph, vertex, margin_of, confirm, 4)
    if found is not None:
        return SearchOutcome("sat", found, bounded_count)
    while frontier.size:
        progress.search("relu-split", frontier.size, frontier.lower.min)
        if deadline.expired():
            return _unfinished("timeout", frontier, bounded_count)
        if frontier.size * BYTES_PER_NEURON * sum(sizes) > MAX_FRONTIER_BYTES:
            return _unfinished("unknown", frontier, bounded_count)
        started = time.monotonic()
        order = frontier.lower.argsort()
        parents, frontier = frontier.select(order[:batch]), frontier.select(order[batch:])
        exhausted = parents.branch < 0
        stuck |= bool(exhausted.any())
        parents = parents.select((~exhausted).nonzero().flatten())
        if parents.size == 0:
            continue
        children, vertex = _bound_and_filter(splitter, _children(parents), settings, leaves)
        bounded_count += 2 * parents.size
        found = replay_most_violating(engine.graph, vertex, margin_of, confirm, 4)
        if found is not None:
            return SearchOutcome("sat", found, bounded_count)
        frontier = Domains.join([frontier, children])
        batch = paced_batch(batch, time.monotonic() - started, BATCH_START, settings.split_batch)
    return SearchOutcome("unknown" if stuck else "proven", None, bounded_count)


def _unfinished(status: str, frontier: Domains, bounded_count: int) -> SearchOutcome:
    logger.info("relu split %s: %d domains bounded, %d open, weakest bound %.4g", status, bounded_count,
                frontier.size, float(frontier.lower.min()))
    return SearchOutcome(status, None, bounded_count)


def _bound_and_filter(splitter: ReluSplitter, domains: Domains, settings: VerifySettings,
                      leaves: list[ReluLeafRecord] | None, start: bool = True) -> tuple[Domains, Tensor]:
    """Bound the domains (re-bounding stalled ones under their splits); return the ones still
    open (bound <= the decision margin) and the vertices minimising their final linear bounds;
    the closed ones are recorded in ``leaves`` when given (then every child is re-bounded under
    its splits first: its bounds are then what the checker derives)."""
    empty = None
    if splitter.certifying and start:
        domains, empty = splitter.rebound(domains)
    result = splitter.bound(domains, start)
    bounded, vertex, scores = result.domains, result.vertex, result.scores
    if empty is not None:
        bounded = replace(bounded, lower=bounded.lower.masked_fill(empty, torch.inf))
    parent = domains.lower
    stalled = ((bounded.lower <= settings.decision_margin) & torch.isfinite(parent) & (not splitter.certifying)
               & (result.own - parent < STALL_GAIN * (-parent).clamp(min=0)))
    if bool(stalled.any()):
        index = stalled.nonzero().flatten()
        rebounded, empty = splitter.rebound(bounded.select(index))
        retried = splitter.bound(rebounded)
        closed = retried.domains.lower.masked_fill(empty, torch.inf)
        bounded = bounded.replace(index, replace(retried.domains, lower=closed))
        vertex, scores = vertex.clone(), scores.clone()
        vertex[index], scores[index] = retried.vertex, retried.scores
    open_mask = still_open(bounded.lower, settings.decision_margin)
    if leaves is not None and not bool(open_mask.all()):
        leaves.extend(splitter.leaf_records(bounded.select((~open_mask).nonzero().flatten())))
    unrefuted = open_mask.nonzero().flatten()
    return splitter.filtered_branching(bounded.select(unrefuted), scores[unrefuted]), vertex[unrefuted]
