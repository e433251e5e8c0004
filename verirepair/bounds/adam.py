"""Adam (Kingma & Ba, 2015) on a few tensors, for the bound optimisers (α, β).

Not torch.optim: constructing one of its optimisers imports torch._dynamo, 1.2-1.7 s per process
on this machine — more than most verifications of a VNN-COMP run take in total. The update is
torch's default Adam (no weight decay, no amsgrad).
"""

from __future__ import annotations

import torch


class Adam:
    """``groups``: (tensors, learning rate) pairs; gradients are read from ``tensor.grad``."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.groups = [(list(tensors), lr) for tensors, lr in groups]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.moments = {id(t): (torch.zeros_like(t), torch.zeros_like(t)) for tensors, _ in self.groups for t in tensors}

    def zero_grad(self) -> None:
        for tensors, _ in self.groups:
            for tensor in tensors:
                tensor.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        correction1 = 1 - self.beta1 ** self.steps
        root_correction2 = (1 - self.beta2 ** self.steps) ** 0.5
        for tensors, lr in self.groups:
            for tensor in tensors:
                if tensor.grad is None:
                    continue
                first, second = self.moments[id(tensor)]
                first.mul_(self.beta1).add_(tensor.grad, alpha=1 - self.beta1)
                second.mul_(self.beta2).addcmul_(tensor.grad, tensor.grad, value=1 - self.beta2)
                denominator = (second.sqrt() / root_correction2).add_(self.eps)
                tensor.addcdiv_(first, denominator, value=-lr / correction1)
