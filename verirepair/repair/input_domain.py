"""The input domain of a repair (``--domain``): where the network is used, a box that holds the
property's boxes. Every strategy keeps the network's behaviour there outside the property's boxes
(patches are exactly zero there, retraining keeps the outputs of samples there), and the report
measures the side effects there.

Given as ``l1,...,ln:u1,...,un`` or as a VNN-LIB file, whose input boxes' hull is the domain (e.g.
a file describing a network's operating range).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spec import Box, Spec

# What the report says when no domain was given.
NOT_CONSTRAINED = "outside the property's boxes: behaviour not constrained (no --domain)"


def parse_domain(text: str) -> Box:
    """The box ``text`` names: ``l1,...,ln:u1,...,un``, or a VNN-LIB file (the hull of its boxes)."""
    if Path(text).is_file():
        from ..spec import parse_vnnlib

        spec = parse_vnnlib(text)
        return Box(np.min([r.box.lower for r in spec.regions], axis=0),
                   np.max([r.box.upper for r in spec.regions], axis=0))
    sides = text.split(":")
    if len(sides) != 2:
        raise InputError(None, "--domain", f"no such VNN-LIB file, and not of the form l1,...,ln:u1,...,un: {text!r}")
    try:
        lower, upper = (np.array([float(v) for v in side.split(",")], dtype=np.float64) for side in sides)
    except ValueError:
        raise InputError(None, "--domain", f"expected comma-separated numbers on each side of ':', got {text!r}") from None
    if lower.shape != upper.shape:
        raise InputError(None, "--domain", f"{len(lower)} lower bounds but {len(upper)} upper bounds")
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise InputError(None, "--domain", "bounds must be finite numbers")
    empty = np.flatnonzero(lower > upper)
    if len(empty):
        i = int(empty[0])
        raise InputError(None, "--domain", f"empty: input {i} has lower {lower[i]:g} above upper {upper[i]:g}")
    return Box(lower, upper)


def check_domain(domain: Box, spec: Spec) -> None:
    """InputError unless ``domain`` has the spec's input size and contains every box of it."""
    if domain.dim != spec.n_inputs:
        raise InputError(None, "--domain", f"has {domain.dim} inputs, the property {spec.source} has {spec.n_inputs}")
    for index, region in enumerate(spec.regions):
        outside = np.flatnonzero((region.box.lower < domain.lower) | (region.box.upper > domain.upper))
        if len(outside):
            i = int(outside[0])
            raise InputError(None, "--domain", f"does not contain box {index} of {spec.source}: input {i} spans "
                             f"[{region.box.lower[i]:.9g}, {region.box.upper[i]:.9g}], the domain "
                             f"[{domain.lower[i]:.9g}, {domain.upper[i]:.9g}]")


def outside_boxes(spec: Spec, domain: Box, count: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform points of ``domain`` that lie in none of the property's boxes (up to ``count``,
    fewer when the boxes fill most of the domain)."""
    points = domain.lower + rng.random((2 * count, domain.dim)) * (domain.upper - domain.lower)
    inside = np.zeros(len(points), dtype=bool)
    for region in spec.regions:
        inside |= np.all((points >= region.box.lower) & (points <= region.box.upper), axis=1)
    return points[~inside][:count]
