"""Localisation: which linear regions of the original network need a patch.

* `enumerate_regions`: every linear region inside a box, by walking from region to region across
  facets (one LP per facet finds a point in its relative interior; a tiny step across it lands in
  the neighbour). Meant for low-dimensional inputs (HCAS: 3). The walk follows facet adjacency;
  should it ever miss a region, the verifier's next counterexample brings it back.
* `violating_patterns`: sampling, for inputs of any dimension.
* `region_violation`: does a region contain a (near-)violation of a clause? One feasibility LP.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

import numpy as np

from ...verify import Deadline
from .lp import solve_lp
from .regions import LinearRegion, ReluNetwork, pattern_key, region_of_pattern

# Facets whose inscribed radius (normalised units) is below this are lower-dimensional slivers.
MIN_FACET_RADIUS = 1e-9
# The step across a facet: at most this (normalised units), and at most half the facet radius.
MAX_STEP = 1e-6


def _facet_point(region: LinearRegion, i: int) -> tuple[np.ndarray, float] | None:
    A, b = region.A, region.b
    k, n = A.shape
    others = np.arange(k) != i
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    A_ub = np.hstack([A[others], np.ones((int(others.sum()), 1))])
    A_eq = np.hstack([A[i:i + 1], np.zeros((1, 1))])
    result = solve_lp(cost, A_ub, b[others], A_eq, b[i:i + 1], bounds=[(None, None)] * n + [(0, 1.0)])
    if result.status != "optimal" or result.x is None or result.x[-1] < MIN_FACET_RADIUS:
        return None
    return result.x[:n], float(result.x[-1])


def enumerate_regions(relu: ReluNetwork, lower: np.ndarray, upper: np.ndarray, deadline: Deadline,
                      max_regions: int = 100_000, seeds: np.ndarray | None = None,
                      accept: Callable[[LinearRegion], bool] | None = None) -> tuple[list[LinearRegion], bool]:
    """All linear regions met by the facet walk inside the box; second value False if cut short.

    With ``accept``, only the regions it accepts are kept and walked on from, starting at the
    ``seeds`` only: the connected set of accepted regions around the seeds (a flood fill, e.g.
    of the violating regions around a counterexample)."""
    width = np.where(upper > lower, upper - lower, 1.0)
    start = ([] if accept is not None else [(lower + upper) / 2]) + ([] if seeds is None else list(np.atleast_2d(seeds)))
    queue: deque[np.ndarray] = deque()
    seen: set[str] = set()
    regions: list[LinearRegion] = []
    for point in start:
        pattern = relu.patterns(point[None, :])[0]
        if pattern_key(pattern) not in seen:
            seen.add(pattern_key(pattern))
            queue.append(pattern)
    while queue:
        if deadline.expired() or len(regions) >= max_regions:
            return regions, False
        # Unpruned rows (after the cheap box filter): a row without a facet is redundant, so the
        # facet LPs prune the region too.
        region = region_of_pattern(relu, queue.popleft(), lower, upper, prune="box")
        if accept is not None and not accept(region):
            continue
        facet_rows = []
        for i in range(region.A.shape[0]):
            found = _facet_point(region, i)
            if found is None:
                continue
            facet_rows.append(i)
            point, radius = found
            step = min(MAX_STEP, radius / 2)
            direction = width * (region.A[i] * width)
            across = point + step * direction / float(np.dot(region.A[i] * width, region.A[i] * width))
            if np.any(across < lower) or np.any(across > upper):
                continue  # a face of the box
            pattern = relu.patterns(across[None, :])[0]
            key = pattern_key(pattern)
            if key not in seen:
                seen.add(key)
                queue.append(pattern)
        regions.append(dataclasses.replace(region, A=region.A[facet_rows], b=region.b[facet_rows]))
    return regions, True


def region_violation(region: LinearRegion, clause_A: np.ndarray, clause_b: np.ndarray, tolerance: float) -> np.ndarray | None:
    """A point of the region where ``clause_A·f(x) <= clause_b + tolerance``, or None."""
    A_out = clause_A @ region.W
    b_out = clause_b + tolerance - clause_A @ region.c
    result = solve_lp(np.zeros(region.A.shape[1]), np.vstack([region.A, A_out]), np.concatenate([region.b, b_out]))
    return result.x if result.status == "optimal" else None


def violating_points(relu: ReluNetwork, clauses: list[tuple[np.ndarray, np.ndarray]], lower: np.ndarray,
                     upper: np.ndarray, samples: int, rng: np.random.Generator, tolerance: float) -> np.ndarray:
    """Uniform samples of the box whose original output violates (or nearly violates) a clause."""
    x = lower + rng.random((samples, lower.size)) * (upper - lower)
    y = relu.forward(x)
    bad = np.zeros(samples, dtype=bool)
    for A, b in clauses:
        bad |= np.all(y @ A.T <= b + tolerance, axis=1)
    return x[bad]
