"""Cheap counterexample search on a candidate before it is exported: projected gradient descent
on the property margin, from random points of each box and from the lowest-margin samples.

This only finds more negative samples for the next training round; the verifier on the exported
file decides whether the candidate is repaired.
"""

from __future__ import annotations

import numpy as np
import torch

from ...verify import representable_bounds
from ..parameters import TrainableNetwork
from .samples import PropertyMargin, RepairData
from .settings import BirdnnSettings


def low_margin_points(module: TrainableNetwork, prop: PropertyMargin, seeds: torch.Tensor, starts: int, steps: int,
                      threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Points of the property's boxes where ``module``'s margin is below ``threshold``.

    The steps are clipped to the largest box of ``seeds``' type inside each box: a face of the box
    rounded to that type can lie outside it, and the points PGD pushes onto the faces would then
    fall out of the box."""
    found = []
    dtype = torch.empty(0, dtype=seeds.dtype).numpy().dtype
    for k, region in enumerate(prop.regions):
        low, high = representable_bounds(region.box, dtype)
        lower = torch.tensor(low, dtype=seeds.dtype)
        upper = torch.tensor(np.maximum(low, high), dtype=seeds.dtype)
        width = upper - lower
        random = lower + torch.tensor(rng.random((starts, region.box.dim)), dtype=seeds.dtype) * width
        inside = seeds[((seeds >= lower) & (seeds <= upper)).all(dim=1)]
        x = torch.cat([random, inside[:starts]]).clone()
        for step in range(steps):
            x.requires_grad_(True)
            margin = region.margin(module(x))
            (gradient,) = torch.autograd.grad(margin.sum(), x)
            size = 0.05 * (1.0 - step / steps) + 0.002
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x - size * width * gradient.sign(), lower), upper)
        with torch.no_grad():
            member = prop.membership(x.double().numpy())
            margin = prop.margin(module(x), member)
        found.append(x[margin < threshold].detach().double().numpy())
    return np.vstack(found) if found else np.zeros((0, seeds.shape[1]))


def search_from_weakest(module: TrainableNetwork, data: RepairData, settings: BirdnnSettings, rng: np.random.Generator,
                        margins: torch.Tensor | None = None) -> np.ndarray:
    """`low_margin_points` started from the domain samples with the smallest margins (computed
    here unless given): the check both BIRDNN methods run before handing a candidate over."""
    if margins is None:
        with torch.no_grad():
            margins = data.property.margin(module(data.domain.x), data.domain.member)
    seeds = data.domain.x[torch.argsort(margins.detach())[:settings.attack_starts]]
    return low_margin_points(module, data.property, seeds, settings.attack_starts, settings.attack_steps,
                             0.25 * data.target_margin, rng)
