"""Rigorous enclosures and linear bounds of sigmoid and tanh, in float64, for the checker.

**Function values.** ``exp`` and ``tanh`` of a float are not floats, and numpy's float64 versions
are not correctly rounded: the C library's and numpy's own vectorised ones are documented within
a few ulps. The checker assumes only that each is within ``LIBRARY_ERROR`` = 2⁻⁴⁴ relative (at
least 256 ulps) plus the smallest normal float ``MIN_NORMAL`` absolute (which covers subnormal
and underflowed results), and widens every value by that much; everything after that is single
float64 operations on enclosures, each result moved one float outward (`down`/`up`: round to
nearest is off by at most half a spacing, so the next float beyond it is beyond the exact value).
``sigmoid(x) = 1 / (1 + exp(-x))`` is evaluated from an enclosure of ``exp(-x)`` (both steps are
monotone); derivatives from the functions' values: ``σ' = σ(1 - σ)``, ``tanh' = 1 - tanh²``.

**Shape.** Both functions are increasing, convex on x <= 0 and concave on x >= 0, and their
derivatives are largest at 0. For a slope k, ``g(x) = f(x) - k·x`` is then convex on the negative
part of [l, u] and concave on the positive part. So on the convex part, ``max g`` is at an end
point and ``min g >= g(p) + g'(p)·(x - p)`` for any point p (a tangent of a convex function lies
below it), and on the concave part the mirror holds. `offsets` evaluates exactly these, with p
near the point where ``f'(p) = k`` (where the tangent is flat and the bound tightest; any p is
valid): ``k·x + low <= f(x) <= k·x + high`` on [l, u] holds for **any** float slope k, so the
slopes (`relaxation` picks them as the verifier does: chord, end-point and mid-point derivatives,
0) and their rounding need no argument.
"""

from __future__ import annotations

import numpy as np

from .rounding import down, up

LIBRARY_ERROR = 2.0**-44
MIN_NORMAL = 2.0**-1022
NARROW = 1e-9  # narrower intervals take the mid-point derivative instead of the chord as a slope
KINDS = ("Sigmoid", "Tanh")


def max_derivative(kind: str) -> float:
    """The largest derivative, at 0 (exact in float64)."""
    return 0.25 if kind == "Sigmoid" else 1.0


def enclosure(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats ``lo <= f(x) <= hi`` for sigmoid or tanh."""
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        if kind == "Sigmoid":
            e = np.exp(-x)
            e_lo = np.maximum(down(down(e * (1.0 - LIBRARY_ERROR)) - MIN_NORMAL), 0.0)
            e_hi = up(up(e * (1.0 + LIBRARY_ERROR)) + MIN_NORMAL)
            return np.maximum(down(1.0 / up(1.0 + e_hi)), 0.0), np.minimum(up(1.0 / down(1.0 + e_lo)), 1.0)
        t = np.tanh(x)
        slack = up(up(np.abs(t) * LIBRARY_ERROR) + MIN_NORMAL)
        return np.maximum(down(t - slack), -1.0), np.minimum(up(t + slack), 1.0)


def derivative_enclosure(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats ``lo <= f'(x) <= hi``."""
    v_lo, v_hi = enclosure(kind, x)
    if kind == "Sigmoid":  # s(1 - s) rises up to s = 1/2 and falls after it
        def at(s: np.ndarray, outward) -> np.ndarray:  # type: ignore[no-untyped-def]
            return outward(s * outward(1.0 - s))
        lowest = np.minimum(at(v_lo, down), at(v_hi, down))
        return np.maximum(lowest, 0.0), at(np.clip(0.5, v_lo, v_hi), up)
    square_hi = up(np.maximum(v_lo * v_lo, v_hi * v_hi))
    square_lo = np.where((v_lo <= 0) & (v_hi >= 0), 0.0, down(np.minimum(v_lo * v_lo, v_hi * v_hi)))
    return np.maximum(down(1.0 - square_hi), 0.0), up(1.0 - square_lo)


def _gap(kind: str, k: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats around ``f(x) - k·x``."""
    f_lo, f_hi = enclosure(kind, x)
    return down(f_lo - up(k * x)), up(f_hi - down(k * x))


def _flat_point(kind: str, k: np.ndarray, concave: bool) -> np.ndarray:
    """Approximately where ``f'(x) = k`` on the convex (x <= 0) or concave (x >= 0) side."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "Sigmoid":
            root = np.sqrt(np.clip(1.0 - 4.0 * k, 0.0, 1.0))
            s = (1.0 + root) / 2 if concave else (1.0 - root) / 2
            point = np.log(s) - np.log1p(-s)
        else:
            t = np.sqrt(np.clip(1.0 - k, 0.0, 1.0))
            point = np.arctanh(t if concave else -t)
    return np.nan_to_num(point, nan=0.0)


def _tangent_extreme(kind: str, k: np.ndarray, a: np.ndarray, b: np.ndarray, concave: bool) -> np.ndarray:
    """On [a, b], where g = f - k·x is convex: a float <= min g; where concave: a float >= max g."""
    p = np.clip(_flat_point(kind, k, concave), a, b)
    g_lo, g_hi = _gap(kind, k, p)
    d_lo, d_hi = derivative_enclosure(kind, p)
    slope_lo, slope_hi = down(d_lo - k), up(d_hi - k)  # g'(p)
    if concave:
        steps = (down(a - p), up(b - p))
        products = [up(s * t) for s in (slope_lo, slope_hi) for t in steps]
        return up(g_hi + np.maximum.reduce(products))
    steps = (down(a - p), up(b - p))
    products = [down(s * t) for s in (slope_lo, slope_hi) for t in steps]
    return down(g_lo + np.minimum.reduce(products))


def offsets(kind: str, k: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floats ``low``, ``high`` with ``k·x + low <= f(x) <= k·x + high`` for x in [lower, upper]
    (``lower <= upper``), for any slopes k (see the module doc)."""
    has_convex, has_concave = lower < 0, upper > 0
    convex_end = np.minimum(upper, 0.0)
    concave_start = np.maximum(lower, 0.0)
    # convex part [lower, min(upper, 0)]: min by a tangent, max at an end point
    convex_low = _tangent_extreme(kind, k, lower, convex_end, concave=False)
    convex_high = np.maximum(_gap(kind, k, lower)[1], _gap(kind, k, convex_end)[1])
    # concave part [max(lower, 0), upper]: min at an end point, max by a tangent
    concave_low = np.minimum(_gap(kind, k, concave_start)[0], _gap(kind, k, upper)[0])
    concave_high = _tangent_extreme(kind, k, concave_start, upper, concave=True)
    low = np.minimum(np.where(has_convex, convex_low, np.inf), np.where(has_concave, concave_low, np.inf))
    high = np.maximum(np.where(has_convex, convex_high, -np.inf), np.where(has_concave, concave_high, -np.inf))
    # an interval that is the single point 0 is in neither part
    at_zero = ~has_convex & ~has_concave
    zero_lo, zero_hi = _gap(kind, k, np.zeros_like(lower))
    return np.where(at_zero, zero_lo, low), np.where(at_zero, zero_hi, high)


def relaxation(kind: str, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(k_low, c_low, k_up, c_up): ``k_low·x + c_low <= f(x) <= k_up·x + c_up`` on [lower, upper].
    Each side takes, among the chord slope, the derivatives at both ends and the middle, and 0,
    the line closest to f at the middle of the interval."""
    mid = lower + (upper - lower) / 2
    nominal = {"Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "Tanh": np.tanh}[kind]
    with np.errstate(over="ignore", invalid="ignore"):
        width = upper - lower
        narrow = ~(width >= NARROW)
        chord = (nominal(upper) - nominal(lower)) / np.where(narrow, 1.0, width)
    derivative = {"Sigmoid": lambda x: nominal(x) * (1.0 - nominal(x)), "Tanh": lambda x: 1.0 - np.tanh(x) ** 2}[kind]
    candidates = [np.where(narrow, derivative(mid), chord), derivative(lower), derivative(upper), derivative(mid),
                  np.zeros_like(mid)]
    best_low = best_up = None
    for k in candidates:
        k = np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = offsets(kind, k, lower, upper)
        low_score, up_score = k * mid + low, -(k * mid + high)
        if best_low is None or best_up is None:
            best_low, best_up = (k, low, low_score), (k, high, up_score)
            continue
        take = low_score > best_low[2]
        best_low = tuple(np.where(take, new, old) for new, old in zip((k, low, low_score), best_low))
        take = up_score > best_up[2]
        best_up = tuple(np.where(take, new, old) for new, old in zip((k, high, up_score), best_up))
    assert best_low is not None and best_up is not None
    return best_low[0], best_low[1], best_up[0], best_up[1]


def interval(kind: str, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of f on [lower, upper] (f is increasing)."""
    return enclosure(kind, lower)[0], enclosure(kind, upper)[1]
