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

Intermediate bounds are those of the root box (CROWN), clamped by each domain's splits; they stay
valid on every domain because every domain lies inside the box. Branching picks, per domain, the
unsplit unstable neuron whose upper relaxation costs the bound most (a BaBSR-like score).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..bounds import AffineLayer, BoundEngine, Chain
from ..bounds.adam import Adam
from .deadline import Deadline, paced_batch
from .falsify import replay_most_violating
from .result import Counterexample, SearchOutcome
from .settings import VerifySettings

Tensor = torch.Tensor
# Gradient steps on (α, β) per batch of domains, and their learning rates.
OPTIMISE_STEPS, ALPHA_LR, BETA_LR = 12, 0.1, 0.05
BATCH_START = 32
# Memory for open domains (int8 signs plus float32 α and β warm starts per unstable-or-not neuron:
# 9 bytes per neuron and domain); beyond it the search gives up, keeping an instance under ~4 GB.
MAX_FRONTIER_BYTES = 1.5e9


@dataclass(frozen=True)
class SplitNetwork:
    """The chain's affine layers and the root bounds of every ReLU's input (flattened views)."""

    weights: list[Tensor]  # W_0 .. W_L  ([n_out, n_in] each)
    biases: list[Tensor]
    pre_lower: list[Tensor]  # per ReLU layer [n_k]
    pre_upper: list[Tensor]

    @staticmethod
    def of(chain: Chain, pre_bounds: list[tuple[Tensor, Tensor]]) -> "SplitNetwork":
        affine = [layer for layer in chain.layers if isinstance(layer, AffineLayer)]
        return SplitNetwork([a.weight for a in affine], [a.bias for a in affine],
                            [l.reshape(-1) for l, _ in pre_bounds], [u.reshape(-1) for _, u in pre_bounds])

    @property
    def sizes(self) -> list[int]:
        return [int(l.numel()) for l in self.pre_lower]


@dataclass
class Domains:
    """A batch of domains: split signs, warm-start α/β, bound and chosen branching neuron."""

    splits: list[Tensor]  # per ReLU layer [D, n_k] int8 in {-1, 0, 1}
    alpha: list[Tensor]  # per ReLU layer [D, n_k] float32
    beta: list[Tensor]
    lower: Tensor  # [D] float64 bound of the objective
    branch: Tensor  # [D] flat neuron index (over all ReLU layers) to split next; -1: none left

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def select(self, index: Tensor) -> "Domains":
        return Domains([s[index] for s in self.splits], [a[index] for a in self.alpha], [b[index] for b in self.beta],
                       self.lower[index], self.branch[index])

    @staticmethod
    def join(parts: list["Domains"]) -> "Domains":
        layers = range(len(parts[0].splits))
        return Domains([torch.cat([p.splits[k] for p in parts]) for k in layers],
                       [torch.cat([p.alpha[k] for p in parts]) for k in layers],
                       [torch.cat([p.beta[k] for p in parts]) for k in layers],
                       torch.cat([p.lower for p in parts]), torch.cat([p.branch for p in parts]))


@dataclass(frozen=True)
class BatchBound:
    lower: Tensor  # [D]
    alpha: list[Tensor]
    beta: list[Tensor]
    branch: Tensor  # [D]
    vertex: Tensor  # [D, n_in]: minimiser of the final linear lower bound over the box


def _relaxation(net: SplitNetwork, k: int, signs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per domain: upper slope and intercept, active and unstable masks, clamped width, layer k."""
    lower = torch.where(signs > 0, net.pre_lower[k].clamp(min=0), net.pre_lower[k])
    upper = torch.where(signs < 0, net.pre_upper[k].clamp(max=0), net.pre_upper[k])
    active, unstable = lower >= 0, (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(lower))
    up_slope = torch.where(unstable, upper / width, active.to(lower.dtype))
    up_intercept = torch.where(unstable, -upper * lower / width, torch.zeros_like(lower))
    return up_slope, up_intercept, active, unstable, width


def bound_domains(net: SplitNetwork, objective: Tensor, offset: float, box_lower: Tensor, box_upper: Tensor,
                  splits: list[Tensor], alpha: list[Tensor], beta: list[Tensor], steps: int) -> BatchBound:
    """Lower bounds of ``objective·f(x) + offset`` on each domain, (α, β) optimised from the given start."""
    batch = splits[0].shape[0]
    dtype = box_lower.dtype
    center, radius = (box_upper + box_lower) / 2, (box_upper - box_lower) / 2
    relax = [_relaxation(net, k, splits[k].to(dtype)) for k in range(len(splits))]
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
            posts: list[Tensor] = []
            for k in range(len(splits) - 1, -1, -1):
                up_slope, up_intercept, active, unstable, _ = relax[k]
                posts.append(lam.detach())
                low_slope = torch.where(unstable, alphas[k], active.to(dtype))
                negative = lam.clamp(max=0)
                bias = bias + (negative * up_intercept).sum(-1)
                lam = lam.clamp(min=0) * low_slope + negative * up_slope - betas[k] * signs[k]
                bias = bias + lam @ net.biases[k]
                lam = lam @ net.weights[k]
            bound = lam @ center - lam.abs() @ radius + bias
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
    net = SplitNetwork.of(engine.chain, pre_bounds)
    lower, upper = box_lower.reshape(-1), box_upper.reshape(-1)
    sizes = net.sizes
    device = lower.device
    root = Domains([torch.zeros(1, n, dtype=torch.int8, device=device) for n in sizes],
                   [_default_alpha(net, k) for k in range(len(sizes))],
                   [torch.zeros(1, n, dtype=torch.float32, device=device) for n in sizes],
                   torch.full((1,), -torch.inf, dtype=lower.dtype, device=device),
                   torch.zeros(1, dtype=torch.long, device=device))
    frontier, result = _bound_and_filter(net, objective, offset, lower, upper, root, settings)
    bounded_count, batch, stuck = 1, BATCH_START, False
    found = replay_most_violating(engine.chain, result.vertex, margin_of, confirm, 4)
    if found is not None:
        return SearchOutcome("sat", found, bounded_count)
    while frontier.size:
        if deadline.expired():
            return SearchOutcome("timeout", None, bounded_count)
        if frontier.size * 9 * sum(sizes) > MAX_FRONTIER_BYTES:
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
        found = replay_most_violating(engine.chain, result.vertex, margin_of, confirm, 4)
        if found is not None:
            return SearchOutcome("sat", found, bounded_count)
        frontier = Domains.join([frontier, children])
        batch = paced_batch(batch, time.monotonic() - started, BATCH_START, settings.split_batch)
    return SearchOutcome("unknown" if stuck else "proven", None, bounded_count)


def _default_alpha(net: SplitNetwork, k: int) -> Tensor:
    return (net.pre_upper[k] > -net.pre_lower[k]).to(torch.float32).unsqueeze(0)


def _bound_and_filter(net: SplitNetwork, objective: Tensor, offset: float, lower: Tensor, upper: Tensor,
                      domains: Domains, settings: VerifySettings) -> tuple[Domains, BatchBound]:
    """Bound ``domains``; return the ones still open (bound <= the decision margin) and the raw result."""
    result = bound_domains(net, objective, offset, lower, upper, domains.splits, domains.alpha, domains.beta, OPTIMISE_STEPS)
    # a child lies inside its parent, so the parent's bound (``domains.lower``) holds on it too
    bound = torch.maximum(result.lower, domains.lower)
    bounded = Domains(domains.splits, result.alpha, result.beta, bound, result.branch)
    still_open = (bound <= settings.decision_margin).nonzero().flatten()
    return bounded.select(still_open), BatchBound(bound[still_open], [], [], result.branch[still_open],
                                                  result.vertex[still_open])
