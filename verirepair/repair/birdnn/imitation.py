"""Behaviour-imitation targets: each negative sample imitates the nearest expected behaviour.

The target of a negative sample is the output (of the original network) of the positive sample
whose output is closest to the negative's own output, in Euclidean distance over the outputs; with
``k > 1`` it is the mean of the ``k`` closest. Only positives that satisfy the property with at
least the target margin are candidates, so every target is itself safely inside the property.
"""

from __future__ import annotations

import torch

CHUNK = 4096  # negatives per distance block; bounds memory at CHUNK × positives floats


def nearest_indices(queries: torch.Tensor, pool: torch.Tensor, k: int = 1) -> torch.Tensor:
    """[Q, k]: indices of the ``k`` rows of ``pool`` nearest to each row of ``queries``."""
    if pool.shape[0] == 0:
        raise ValueError("no positive sample to imitate")
    k = min(k, pool.shape[0])
    blocks = []
    for start in range(0, queries.shape[0], CHUNK):
        distance = torch.cdist(queries[start:start + CHUNK].double(), pool.double())
        blocks.append(torch.topk(distance, k, dim=1, largest=False, sorted=True).indices)
    if not blocks:
        return torch.zeros((0, k), dtype=torch.long)
    return torch.cat(blocks)


def imitation_targets(negative_outputs: torch.Tensor, positive_outputs: torch.Tensor, k: int = 1) -> torch.Tensor:
    """[Q, m]: the mean output of the ``k`` positive outputs nearest to each negative output."""
    index = nearest_indices(negative_outputs, positive_outputs, k)
    return positive_outputs[index].mean(dim=1)
