"""ReLU-split branch and bound (β-CROWN style) for ReLU networks with many inputs (MNIST: 784).

A domain is the region's input box plus sign constraints ``s_i·z_i >= 0`` on some unstable ReLU
pre-activations ``z_i`` (``s_i = +1``: the neuron is active, ``-1``: inactive). Its bound is a
lower bound of the objective ``c·f(x) + d`` over the box *restricted by the constraints*:

* a split neuron is relaxed exactly (identity or zero) — valid because the constraint holds on the
  domain;
* each constraint enters the back-substitution through a multiplier ``β_i >= 0``: on the domain
  ``c·f(x) + d >= c·f(x) + d - Σ β_i s_i z_i(x)``, and the right side is bounded over the whole
  box by CROWN. Any ``β >= 0`` and any lower slopes ``α`` in [0, 1] give a sound bound, so both
  are optimised by gradient ascent and the best bound seen is kept.

Intermediate bounds: each domain carries its own bounds of every ReLU input, starting from the
root box's (α-CROWN); a child inherits its parent's (valid: it lies inside the parent), and its
bound is never below its parent's. A child whose bound stalls (`STALL_GAIN`) has its layers
re-bounded by CROWN under its splits, intersected with what it had (`tighten_intermediate`), and
is bounded again: otherwise splitting early neurons of a deep network never tightens its later
layers. A domain whose bounds cross (lower above upper) contains no point of the box and is closed.

Branching picks, per domain, the unsplit unstable neuron whose upper relaxation costs the bound most
(a BaBSR-like score).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..bounds import BoundEngine, BoundGraph, concretize
from ..bounds.linear import Dense
from ..bounds.adam import Adam
from ..bounds.rounding import affine_error, lowered, magnitude, multiplier_error, relu_error
from .deadline import Deadline, paced_batch
from .falsify import replay_most_violating
from .objective import still_open
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

Tensor = torch.Tensor
# Gradient steps on (α, β) per batch of domains, and their learning rates.
OPTIMISE_STEPS, ALPHA_LR, BETA_LR = 12, 0.1, 0.05
BATCH_START = 32
# A child whose own bound gained less than this fraction of its parent's shortfall below zero has
# stalled: splitting alone no longer tightens it, so its intermediate bounds are re-bounded under
# its splits (`tighten_intermediate`) and it is bounded again. Measured on one clause each, 2 CPU
# threads: eran's 9x200 image 2971 is proven in 70 s without re-bounding, in 58 s re-bounding the
# stalled children, and is still at -0.37 after 60 s re-bounding every child (~15x the time per
# domain); mnist_fc's 256x6 property 7 (eps 0.03) stalls at -0.157 without re-bounding and
# reaches -0.036 in 90 s with it.
STALL_GAIN = 0.02
# Memory for open domains (int8 signs, float32 α and β warm starts and two float64 bounds per
# neuron: 25 bytes per neuron and domain); beyond it the search gives up, keeping an instance
# under ~4 GB.
MAX_FRONTIER_BYTES = 1.5e9
BYTES_PER_NEURON = 25
# Re-bounding intermediate layers back-substitutes a [domains, 2·neurons, inputs] matrix per layer;
# domains go through in chunks whose matrix takes about this much (a whole batch of mnist_fc 256x4
# children at once peaked at 9 GB).
TIGHTEN_CHUNK_BYTES = 64e6
# A domain is empty only when some neuron's bounds cross by more than this (as `decision_margin`).
EMPTY_MARGIN = 1e-9


@dataclass(frozen=True)
class SplitNetwork:
    """The chain's affine layers and the root bounds of every ReLU's input (flattened views)."""

    weights: list[Tensor]  # W_0 .. W_L  ([n_out, n_in] each)
    biases: list[Tensor]
    pre_lower: list[Tensor]  # per ReLU layer [n_k]
    pre_upper: list[Tensor]
    abs_weights: list[Tensor]  # |W_0| .. |W_L|, for the rounding budgets

    @staticmethod
    def of(graph: BoundGraph, pre_bounds: list[tuple[Tensor, Tensor]]) -> "SplitNetwork":
        affine = [node.op for node in graph.nodes if isinstance(node.op, Dense)]
        biases = [a.bias if a.has_bias else a.weight.new_zeros(a.weight.shape[0]) for a in affine]
        return SplitNetwork([a.weight for a in affine], biases,
                            [l.reshape(-1) for l, _ in pre_bounds], [u.reshape(-1) for _, u in pre_bounds],
                            [a.weight.abs() for a in affine])

    @property
    def sizes(self) -> list[int]:
        return [int(l.numel()) for l in self.pre_lower]


@dataclass
class Domains:
    """A batch of domains: split signs, intermediate bounds, warm-start α/β, bound and chosen
    branching neuron."""

    splits: list[Tensor]  # per ReLU layer [D, n_k] int8 in {-1, 0, 1}
    pre_lower: list[Tensor]  # per ReLU layer [D, n_k] float64: bounds of its input on the domain
    pre_upper: list[Tensor]
    alpha: list[Tensor]  # per ReLU layer [D, n_k] float32
    beta: list[Tensor]
    lower: Tensor  # [D] float64 bound of the objective
    branch: Tensor  # [D] flat neuron index (over all ReLU layers) to split next; -1: none left

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def _parts(self) -> list[list[Tensor]]:
        return [self.splits, self.pre_lower, self.pre_upper, self.alpha, self.beta]

    def select(self, index: Tensor) -> "Domains":
        return Domains(*[[t[index] for t in part] for part in self._parts()], self.lower[index], self.branch[index])

    def replace(self, index: Tensor, other: "Domains") -> "Domains":
        """These domains with rows ``index`` replaced by ``other``'s."""
        def put(mine: Tensor, theirs: Tensor) -> Tensor:
            mine = mine.clone()
            mine[index] = theirs
            return mine

        parts = [[put(t, u) for t, u in zip(mine, theirs)] for mine, theirs in zip(self._parts(), other._parts())]
        return Domains(*parts, put(self.lower, other.lower), put(self.branch, other.branch))

    @staticmethod
    def join(parts: list["Domains"]) -> "Domains":
        fields = zip(*[p._parts() for p in parts])
        return Domains(*[[torch.cat(layer) for layer in zip(*field)] for field in fields],
                       torch.cat([p.lower for p in parts]), torch.cat([p.branch for p in parts]))


@dataclass(frozen=True)
class BatchBound:
    lower: Tensor  # [D]
    alpha: list[Tensor]
    beta: list[Tensor]
    branch: Tensor  # [D]
    vertex: Tensor  # [D, n_in]: minimiser of the final linear lower bound over the box


def _clamped(lower: Tensor, upper: Tensor, signs: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of a ReLU input with each domain's split sign applied (active: >= 0, inactive: <= 0)."""
    return (torch.where(signs > 0, lower.clamp(min=0), lower), torch.where(signs < 0, upper.clamp(max=0), upper))


def _input_magnitude(k: int, box_lower: Tensor, box_upper: Tensor, pre_upper: list[Tensor]) -> Tensor:
    """The largest |value| of the input of weight matrix ``k``: the box for the first, else the
    preceding ReLU's output, at most the positive part of its input's upper bound."""
    return magnitude(box_lower, box_upper).expand(pre_upper[0].shape[0], -1) if k == 0 else pre_upper[k - 1].clamp(min=0)


def _relaxation(pre_lower: Tensor, pre_upper: Tensor, signs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per domain: upper slope and intercept, active and unstable masks, clamped width."""
    lower, upper = _clamped(pre_lower, pre_upper, signs)
    active, unstable = lower >= 0, (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))
    up_slope = torch.where(unstable, upper / width, active.to(lower.dtype))
    up_intercept = torch.where(unstable, -upper * lower / width, torch.zeros_like(lower))
    return up_slope, up_intercept, active, unstable, width


def tighten_intermediate(net: SplitNetwork, box_lower: Tensor, box_upper: Tensor, splits: list[Tensor],
                         pre_lower: list[Tensor], pre_upper: list[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Each domain's bounds of every ReLU layer after the first (whose inputs depend on the box
    alone), re-bounded under its splits.

    Layer by layer, CROWN bounds the inputs of ReLU layer k that are unstable in some domain, using
    the domain's (already tightened) relaxations of layers before k, and intersects them with the
    domain's previous bounds. Both are valid on the domain, so the intersection is. Returns the
    new bounds and a [D] mask of domains shown empty (some neuron's lower bound above its upper by
    more than `EMPTY_MARGIN`, so float rounding cannot close a domain that has points).
    Domains go through in chunks whose back-substitution matrices take `TIGHTEN_CHUNK_BYTES`.
    """
    widest = max((w.shape[0] * w.shape[1] for w in net.weights[1:len(splits)]), default=1)
    chunk = max(1, int(TIGHTEN_CHUNK_BYTES // (2 * widest * box_lower.element_size())))
    count = splits[0].shape[0]
    if count <= chunk:
        return _tighten_chunk(net, box_lower, box_upper, splits, pre_lower, pre_upper)
    parts = [_tighten_chunk(net, box_lower, box_upper, *[[t[start:start + chunk] for t in ts] for ts in (splits, pre_lower, pre_upper)])
             for start in range(0, count, chunk)]
    return ([torch.cat([p[0][k] for p in parts]) for k in range(len(splits))],
            [torch.cat([p[1][k] for p in parts]) for k in range(len(splits))], torch.cat([p[2] for p in parts]))


def _tighten_chunk(net: SplitNetwork, box_lower: Tensor, box_upper: Tensor, splits: list[Tensor],
                   pre_lower: list[Tensor], pre_upper: list[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor]:
    dtype = box_lower.dtype
    lower, upper = list(pre_lower), list(pre_upper)
    signs = [s.to(dtype) for s in splits]
    relax = [_relaxation(lower[0], upper[0], signs[0])]
    for k in range(1, len(splits)):
        clamped_lower, clamped_upper = _clamped(lower[k], upper[k], signs[k])
        columns = ((clamped_lower < 0) & (clamped_upper > 0)).any(dim=0).nonzero().flatten()
        if columns.numel():
            weight, bias_k = net.weights[k][columns], net.biases[k][columns]
            lam = torch.cat([weight, -weight]).expand(lower[k].shape[0], -1, -1)
            bias = torch.cat([bias_k, -bias_k]).expand(lower[k].shape[0], -1)
            error = torch.zeros_like(bias)  # float64 rounding of the pass, see `bounds.rounding`
            for j in range(k - 1, -1, -1):
                up_slope, up_intercept, active, unstable, _ = relax[j]
                error = error + relu_error(lam, bias, up_intercept, magnitude(lower[j], upper[j]))
                # CROWN's adaptive lower line: slope 1 where the neuron is more often active
                low_slope = torch.where(unstable, (upper[j] > -lower[j]).to(dtype), active.to(dtype)).unsqueeze(1)
                negative = lam.clamp(max=0)
                bias = bias + (negative * up_intercept.unsqueeze(1)).sum(-1)
                lam = lam.clamp(min=0) * low_slope + negative * up_slope.unsqueeze(1)
                error = error + affine_error(lam, bias, net.abs_weights[j], net.biases[j],
                                             _input_magnitude(j, box_lower, box_upper, upper))
                bias = bias + lam @ net.biases[j]
                lam = lam @ net.weights[j]
            bound = concretize(lam, lowered(bias, error), box_lower, box_upper)
            m = columns.numel()
            lower[k] = lower[k].clone()
            upper[k] = upper[k].clone()
            lower[k][:, columns] = torch.maximum(lower[k][:, columns], bound[:, :m])
            upper[k][:, columns] = torch.minimum(upper[k][:, columns], -bound[:, m:])
        relax.append(_relaxation(lower[k], upper[k], signs[k]))
    empty = torch.zeros(lower[0].shape[0], dtype=torch.bool, device=lower[0].device)
    for k in range(len(splits)):
        clamped_lower, clamped_upper = _clamped(lower[k], upper[k], signs[k])
        empty |= (clamped_lower > clamped_upper + EMPTY_MARGIN).any(dim=1)
    return lower, upper, empty


def bound_domains(net: SplitNetwork, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                  splits: list[Tensor], pre_lower: list[Tensor], pre_upper: list[Tensor], alpha: list[Tensor],
                  beta: list[Tensor], steps: int) -> BatchBound:
    """Lower bounds of ``objective·f(x) + offset`` on each domain, (α, β) optimised from the given start.

    ``pre_lower``/``pre_upper``: per ReLU layer [D, n_k] bounds of its input valid on each domain.
    """
    batch = splits[0].shape[0]
    dtype = box_lower.dtype
    relax = [_relaxation(pre_lower[k], pre_upper[k], splits[k].to(dtype)) for k in range(len(splits))]
    magnitudes = [magnitude(pre_lower[k], pre_upper[k]) for k in range(len(splits))]
    last_magnitude = pre_upper[-1].clamp(min=0)
    signs = [s.to(dtype) for s in splits]
    alphas = [a.to(dtype).clone().requires_grad_(True) for a in alpha]
    betas = [b.to(dtype).clone().requires_grad_(True) for b in beta]
    optimiser = Adam([(alphas, ALPHA_LR), (betas, BETA_LR)])
    best = torch.full((batch,), -torch.inf, dtype=dtype, device=box_lower.device)
    best_alpha = [a.detach().clone() for a in alphas]
    best_beta = [b.detach().clone() for b in betas]
    best_vertex = box_lower.expand(batch, -1).clone()
    best_posts: list[Tensor] = []
    for step in range(max(steps, 1)):
        with torch.enable_grad():
            lam = (objective @ net.weights[-1]).expand(batch, -1)
            bias = torch.full((batch,), float(objective @ net.biases[-1]) + offset, dtype=dtype, device=box_lower.device)
            # float64 rounding of the pass (see `bounds.rounding`), the objective's first step included
            error = affine_error(objective.expand(batch, 1, -1), torch.zeros_like(bias).unsqueeze(1), net.abs_weights[-1],
                                 net.biases[-1], last_magnitude).squeeze(1) + 2 * torch.finfo(dtype).eps * abs(offset)
            posts: list[Tensor] = []
            for k in range(len(splits) - 1, -1, -1):
                up_slope, up_intercept, active, unstable, _ = relax[k]
                posts.append(lam.detach())
                row, row_bias = lam.unsqueeze(1), bias.unsqueeze(1)
                error = error + (relu_error(row, row_bias, up_intercept, magnitudes[k])
                                 + multiplier_error(row, row_bias, betas[k].unsqueeze(1), torch.zeros_like(row),
                                                    magnitudes[k])).squeeze(1)
                low_slope = torch.where(unstable, alphas[k], active.to(dtype))
                negative = lam.clamp(max=0)
                bias = bias + (negative * up_intercept).sum(-1)
                lam = lam.clamp(min=0) * low_slope + negative * up_slope - betas[k] * signs[k]
                error = error + affine_error(lam.unsqueeze(1), bias.unsqueeze(1), net.abs_weights[k], net.biases[k],
                                             _input_magnitude(k, box_lower, box_upper, pre_upper)).squeeze(1)
                bias = bias + lam @ net.biases[k]
                lam = lam @ net.weights[k]
            bound = concretize(lam.unsqueeze(1), lowered(bias, error).unsqueeze(1), box_lower, box_upper).squeeze(1)
        with torch.no_grad():
            better = bound > best
            best = torch.where(better, bound, best)
            for k in range(len(splits)):
                best_alpha[k][better] = alphas[k][better]
                best_beta[k][better] = betas[k][better]
            best_vertex[better] = torch.where(lam[better] > 0, box_lower, box_upper)
            if step == 0:
                best_posts = posts[::-1]
        if step == steps - 1 or steps == 0:
            break
        optimiser.zero_grad()
        (-bound.sum()).backward()
        optimiser.step()
        with torch.no_grad():
            for a in alphas:
                a.clamp_(0.0, 1.0)
            for b in betas:
                b.clamp_(min=0.0)
    branch = _branching(relax, best_posts, splits)
    return BatchBound(best.detach(), [a.float() for a in best_alpha], [b.float() for b in best_beta], branch, best_vertex)


def _branching(relax: list[tuple[Tensor, ...]], posts: list[Tensor], splits: list[Tensor]) -> Tensor:
    """Per domain, the flat index of the unsplit unstable neuron with the largest score (-1: none).

    Score: what the neuron's upper-line intercept costs the bound (``-min(λ, 0)·intercept``), plus
    a small term in ``|λ|·width`` that ranks neurons whose λ is positive (lower line in use).
    """
    scores = []
    for (_, up_intercept, _, unstable, width), lam, signs in zip(relax, posts, splits):
        score = -lam.clamp(max=0) * up_intercept + 1e-3 * lam.abs() * width
        scores.append(torch.where(unstable & (signs == 0), score, torch.full_like(score, -1.0)))
    flat = torch.cat(scores, dim=1)
    value, index = flat.max(dim=1)
    return torch.where(value >= 0, index, torch.full_like(index, -1))


def _children(domains: Domains, sizes: list[int]) -> Domains:
    """Two children per domain: its branching neuron active (+1) and inactive (-1)."""
    offsets = np.cumsum([0] + sizes)
    both = Domains.join([domains, domains])
    device = both.branch.device
    sign = torch.cat([torch.ones(domains.size, device=device), -torch.ones(domains.size, device=device)]).to(torch.int8)
    rows = torch.arange(both.size, device=device)
    for k in range(len(sizes)):
        inside = (both.branch >= offsets[k]) & (both.branch < offsets[k + 1])
        if bool(inside.any()):
            splits = both.splits[k].clone()
            splits[rows[inside], both.branch[inside] - int(offsets[k])] = sign[inside]
            both.splits[k] = splits
            beta = both.beta[k].clone()
            beta[rows[inside], both.branch[inside] - int(offsets[k])] = 0.0
            both.beta[k] = beta
    return both


def relu_split_search(engine: BoundEngine, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                      pre_bounds: list[tuple[Tensor, Tensor]], settings: VerifySettings, deadline: Deadline,
                      margin_of: Callable[[Tensor], Tensor], confirm: Callable[[np.ndarray], Counterexample | None],
                      ) -> SearchOutcome:
    """Prove ``objective·f(x) + offset > 0`` on the box, or find a confirmed counterexample.

    ``margin_of`` maps network outputs to the region's violation margin (<= 0: violation), used to
    rank candidate points before they are replayed in onnxruntime by ``confirm``.
    """
    net = SplitNetwork.of(engine.graph, pre_bounds)
    lower, upper = box_lower.reshape(-1), box_upper.reshape(-1)
    sizes = net.sizes
    device = lower.device
    root = Domains([torch.zeros(1, n, dtype=torch.int8, device=device) for n in sizes],
                   [l.unsqueeze(0) for l in net.pre_lower], [u.unsqueeze(0) for u in net.pre_upper],
                   [_default_alpha(net, k) for k in range(len(sizes))],
                   [torch.zeros(1, n, dtype=torch.float32, device=device) for n in sizes],
                   torch.full((1,), -torch.inf, dtype=lower.dtype, device=device),
                   torch.zeros(1, dtype=torch.long, device=device))
    frontier, result = _bound_and_filter(net, objective, offset, lower, upper, root, settings)
    bounded_count, batch, stuck = 1, BATCH_START, False
    found = replay_most_violating(engine.graph, result.vertex, margin_of, confirm, 4)
    if found is not None:
        return SearchOutcome("sat", found, bounded_count)
    while frontier.size:
        progress.search("relu-split", frontier.size, frontier.lower.min)
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded_count)
        if frontier.size * BYTES_PER_NEURON * sum(sizes) > MAX_FRONTIER_BYTES:
            return SearchOutcome("unknown", None, bounded_count)
        started = time.monotonic()
        order = frontier.lower.argsort()
        parents, frontier = frontier.select(order[:batch]), frontier.select(order[batch:])
        leaves = parents.branch < 0
        stuck |= bool(leaves.any())
        parents = parents.select((~leaves).nonzero().flatten())
        if parents.size == 0:
            continue
        children, result = _bound_and_filter(net, objective, offset, lower, upper, _children(parents, sizes), settings)
        bounded_count += 2 * parents.size
        found = replay_most_violating(engine.graph, result.vertex, margin_of, confirm, 4)
        if found is not None:
            return SearchOutcome("sat", found, bounded_count)
        frontier = Domains.join([frontier, children])
        batch = paced_batch(batch, time.monotonic() - started, BATCH_START, settings.split_batch)
    return SearchOutcome("unknown" if stuck else "proven", None, bounded_count)


def _default_alpha(net: SplitNetwork, k: int) -> Tensor:
    return (net.pre_upper[k] > -net.pre_lower[k]).to(torch.float32).unsqueeze(0)


def _bound(net: SplitNetwork, objective: Tensor, offset: float, lower: Tensor, upper: Tensor,
           domains: Domains) -> tuple[Domains, Tensor, Tensor]:
    """The domains with optimised (α, β), their bound and branching neuron; the vertices minimising
    their final linear bounds; and each domain's own bound before its parent's is taken into
    account (a child lies inside its parent, so the parent's bound ``domains.lower`` holds on it)."""
    result = bound_domains(net, objective, offset, lower, upper, domains.splits, domains.pre_lower, domains.pre_upper,
                           domains.alpha, domains.beta, OPTIMISE_STEPS)
    bounded = Domains(domains.splits, domains.pre_lower, domains.pre_upper, result.alpha, result.beta,
                      torch.maximum(result.lower, domains.lower), result.branch)
    return bounded, result.vertex, result.lower


def _bound_and_filter(net: SplitNetwork, objective: Tensor, offset: float, lower: Tensor, upper: Tensor,
                      domains: Domains, settings: VerifySettings) -> tuple[Domains, BatchBound]:
    """Bound the domains (re-bounding stalled ones with tightened intermediate bounds); return the
    ones still open (bound <= the decision margin) and their result."""
    bounded, vertex, own = _bound(net, objective, offset, lower, upper, domains)
    parent = domains.lower
    stalled = ((bounded.lower <= settings.decision_margin) & torch.isfinite(parent)
               & (own - parent < STALL_GAIN * (-parent).clamp(min=0)))
    if bool(stalled.any()):
        index = stalled.nonzero().flatten()
        sub = bounded.select(index)
        pre_lower, pre_upper, empty = tighten_intermediate(net, lower, upper, sub.splits, sub.pre_lower, sub.pre_upper)
        retried, retried_vertex, _ = _bound(net, objective, offset, lower, upper,
                                            Domains(sub.splits, pre_lower, pre_upper, sub.alpha, sub.beta, sub.lower,
                                                    sub.branch))
        retried.lower = torch.where(empty, torch.full_like(retried.lower, torch.inf), retried.lower)
        bounded = bounded.replace(index, retried)
        vertex = vertex.clone()
        vertex[index] = retried_vertex
    unrefuted = still_open(bounded.lower, settings.decision_margin).nonzero().flatten()
    return bounded.select(unrefuted), BatchBound(bounded.lower[unrefuted], [], [], bounded.branch[unrefuted],
                                                 vertex[unrefuted])
