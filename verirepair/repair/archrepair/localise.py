r"""Vulnerable block localisation: a spectrum score forward and a gradient score backward.

For a block ``B`` with neurons ``N(B)`` (the outputs of its Relu nodes) and weights ``θ_B``, on
failing inputs ``F`` and passing inputs ``P``:

* forward (Ochiai suspiciousness of the neurons' activation status, averaged over the block,
  less what a neuron active as often but independently of failing would get: without that
  baseline the average mostly says how often a block's neurons fire at all)::

      a_F(n) = #{x ∈ F : n(x) > 0},  a_P(n) = #{x ∈ P : n(x) > 0},  r(n) = (a_F(n) + a_P(n)) / (|F| + |P|)
      ochiai(n) = a_F(n) / sqrt(|F| · (a_F(n) + a_P(n)))                       (0 where a_F(n) = 0)
      forward(B) = mean_{n ∈ N(B)} [ochiai(n) - sqrt(r(n) · |F| / (|F| + |P|))]

* backward (the size of the block's weight gradients on failing inputs, relative to passing
  ones, each normalised by the block's size)::

      g_S(B) = mean_{x ∈ S} ||∇_{θ_B} L(x)||_1 / |θ_B|
      backward(B) = g_F(B) / (g_F(B) + g_P(B))                                  (1/2 where both are 0)

  ``L`` is the caller's per-input loss (the strategy: minus the property margin on failing
  inputs, minus the margin of the original decision on passing ones).

forward lies in [-1, 1], backward in [0, 1]; ``score(B) = forward(B) + backward(B)`` and the block with the highest score
is repaired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..parameters import TrainableNetwork
from .blocks import Block

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(outputs [N, m], the inputs' row indices [N]) → per-input losses [N]."""


@dataclass(frozen=True)
class BlockScore:
    block: Block
    forward: float
    backward: float

    @property
    def score(self) -> float:
        return self.forward + self.backward


def ochiai(active_failing: torch.Tensor, active_passing: torch.Tensor, failing: int, passing: int) -> torch.Tensor:
    """Per neuron: ``a_F / sqrt(|F| (a_F + a_P))`` from activation counts (0 where a_F is 0), less
    the same for a neuron active as often but independently of failing."""
    active = active_failing + active_passing
    denominator = torch.sqrt(failing * active)
    score = torch.where(active_failing > 0, active_failing / denominator.clamp(min=1e-12), torch.zeros_like(denominator))
    return score - torch.sqrt(active / (failing + passing) * failing / (failing + passing))


def forward_scores(module: TrainableNetwork, blocks: list[Block], failing: torch.Tensor, passing: torch.Tensor) -> list[float]:
    with torch.no_grad():
        on_failing, on_passing = module.values(failing), module.values(passing)
    scores = []
    for block in blocks:
        active_f = torch.cat([(on_failing[v] > 0).reshape(len(failing), -1) for v in block.relus], dim=1).sum(dim=0)
        active_p = torch.cat([(on_passing[v] > 0).reshape(len(passing), -1) for v in block.relus], dim=1).sum(dim=0)
        scores.append(float(ochiai(active_f.double(), active_p.double(), len(failing), len(passing)).mean()))
    return scores


def gradient_sizes(module: TrainableNetwork, blocks: list[Block], x: torch.Tensor, loss: Loss) -> torch.Tensor:
    """[len(blocks)]: ``g_S(B)`` over the rows of ``x`` (one backward pass per input)."""
    parameters = {name: module.parameter(name) for block in blocks for name in block.weights if name in module.names}
    totals = torch.zeros(len(blocks), dtype=torch.float64)
    for row in range(len(x)):
        value = loss(module(x[row:row + 1]), torch.tensor([row])).sum()
        gradients = torch.autograd.grad(value, list(parameters.values()), allow_unused=True)
        size = {name: 0.0 if g is None else float(g.abs().sum()) for name, g in zip(parameters, gradients)}
        for k, block in enumerate(blocks):
            totals[k] += sum(size.get(name, 0.0) for name in block.weights)
    sizes = torch.tensor([max(block.parameters, 1) for block in blocks], dtype=torch.float64)
    return totals / max(len(x), 1) / sizes


def block_scores(module: TrainableNetwork, blocks: list[Block], failing: torch.Tensor, passing: torch.Tensor,
                 failing_loss: Loss, passing_loss: Loss) -> list[BlockScore]:
    """Every block's scores (see the module docstring), in the order of ``blocks``."""
    forward = forward_scores(module, blocks, failing, passing)
    with torch.enable_grad():
        g_failing = gradient_sizes(module, blocks, failing, failing_loss)
        g_passing = gradient_sizes(module, blocks, passing, passing_loss)
    total = g_failing + g_passing
    backward = torch.where(total > 0, g_failing / total.clamp(min=1e-300), torch.full_like(total, 0.5))
    return [BlockScore(block, f, float(b)) for block, f, b in zip(blocks, forward, backward)]


def most_vulnerable(scores: list[BlockScore]) -> BlockScore:
    """The highest-scoring block (the first of equals)."""
    return ranked(scores)[0]


def ranked(scores: list[BlockScore]) -> list[BlockScore]:
    """Highest score first (equals in graph order)."""
    return sorted(scores, key=lambda s: -s.score)
