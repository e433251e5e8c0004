"""Sound bounds of a dense ReLU, sigmoid or tanh network over boxes, in float64 with outward rounding.

**Argument.** Every number below is a float64 standing for a real number, and every bound must
hold in real arithmetic. Round-to-nearest float64 gives, for each operation, the exact result
times (1 + δ) with |δ| <= u = 2⁻⁵³, plus at most 2⁻¹⁰⁷⁵ where the result is subnormal. Hence a sum of
n products computed in any order (BLAS, with or without fused multiply-adds) differs from the
exact sum by at most γ_n·Σ|terms| + n·2⁻¹⁰⁷⁵, with γ_n = n·u/(1 - n·u) (Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1). Each computation here adds such a term, with Σ|terms|
bounded from the magnitudes of the quantities involved, to an error that is subtracted at the end.
The terms are computed in float64 too; `error_factor` is twice γ, which covers the rounding of
the terms themselves (each is off by a relative n·u, far below the factor 2), and the absolute
`TINY` covers underflow. A bound is finally moved one float outward (`down`/`up`: the float next
to the rounded result is beyond the exact value).

* Interval of ``z = W·h + b`` for h in [l, u]: ``W⁺l + W⁻u + b`` (and its mirror), 2n+1 terms whose
  magnitudes sum to at most ``|W|·m + |b|`` with m = max(|l|, |u|).
* Back-substitution carries ``Λ·h + c - e`` (e >= 0, the accumulated rounding), a lower bound of
  the objective wherever h is within its bounds. Through ``z = W·h + b`` the exact image is
  ``(ΛW)·h + (c + Λb)``; the computed one is off by at most error_factor·(|Λ|·(|W|·m_h + |b|) + |c|).
* Through ``h = relu(z)`` with z in [l, u]: stable neurons are exact (h = z or h = 0); an unstable
  one is bounded below by ``α·z`` (α = 1 when u > -l, else 0: CROWN's adaptive slope; valid for any
  α in [0, 1]) and above by ``s·z + t``, where s = fl(u/(u - l)) is whatever float it rounds to and
  t is *chosen* >= max(-s·l, u - s·u), computed rounding upward: a line above relu at both ends of
  [l, u] is above it on all of [l, u] (relu is convex), so the line is valid exactly. The products
  Λ·s and the sum of the intercepts into c add error_factor·(|Λ|·(m_z + t) + |c|).
* Through ``h = f(z)``, f sigmoid or tanh, with z in [l, u]: the lines of `sshaped.relaxation`,
  ``k·z + c`` with any float slope k and an offset c that `sshaped` bounds rigorously (see its
  doc), so they hold exactly; the products Λ·k and the sum of the offsets into c add
  error_factor·(|Λ|·(|k|·m_z + |c_off|) + |c|). Intervals: [f(l), f(u)] enclosed outward.
* The minimum over the box of ``Λ·x + c`` is ``Λ⁺·lower + Λ⁻·upper + c``, 2n+1 terms.

Nothing else is approximated: there is no tolerance. A recorded bound of the certificate is
never trusted: the *looser* of it and this module's own bound is used (`layer_bounds`), so a
too-tight recorded bound cannot help a false claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import sshaped
from .onnx_reader import DenseNetwork
from .rounding import down, up

UNIT_ROUNDOFF = 2.0**-53
TINY = 2.0**-1074  # the smallest subnormal: per-operation underflow error is at most half of it


def error_factor(n: int) -> float:
    """2·γ_{n+4}: bounds the rounding of an n-term sum of products, relative to Σ|terms|, with room
    for the rounding of the error term's own computation."""
    nu = (n + 4) * UNIT_ROUNDOFF
    return 2.0 * nu / (1.0 - nu)


def magnitude(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(lower), np.abs(upper))


def affine_interval(weight: np.ndarray, bias: np.ndarray, lower: np.ndarray,
                    upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``weight·h + bias`` for h in [lower, upper] ([B, n_in] each)."""
    positive, negative = np.maximum(weight, 0.0), np.minimum(weight, 0.0)
    low = lower @ positive.T + upper @ negative.T + bias
    high = upper @ positive.T + lower @ negative.T + bias
    n = weight.shape[1]
    error = error_factor(2 * n + 1) * (magnitude(lower, upper) @ np.abs(weight).T + np.abs(bias)) + (2 * n + 2) * TINY
    return down(low - error), up(high + error)


@dataclass
class LinearBound:
    """``coefficients·h + constant - error`` (error >= 0) bounds an objective from below; [B, m, n],
    [B, m], [B, m]."""

    coefficients: np.ndarray
    constant: np.ndarray
    error: np.ndarray

    def through_affine(self, weight: np.ndarray, bias: np.ndarray, input_magnitude: np.ndarray) -> LinearBound:
        """Objective over ``z = weight·h + bias`` → over h (``input_magnitude`` [B, n_in] bounds |h|)."""
        n_out = weight.shape[0]
        reach = input_magnitude @ np.abs(weight).T + np.abs(bias)  # [B, n_out]
        added = error_factor(n_out + 1) * (np.einsum("bmn,bn->bm", np.abs(self.coefficients), reach)
                                           + np.abs(self.constant)) + (n_out + 2) * TINY
        return LinearBound(self.coefficients @ weight, self.constant + self.coefficients @ bias, self.error + added)

    def through_relu(self, lower: np.ndarray, upper: np.ndarray, alpha: np.ndarray | None = None) -> LinearBound:
        """Objective over ``relu(z)`` → over z, for z in [lower, upper] ([B, n]).

        ``alpha`` [B, n]: the lower slopes of unstable neurons (clipped to [0, 1]; CROWN's adaptive
        slope where not given or NaN).
        """
        active, inactive = lower >= 0, upper <= 0
        unstable = ~active & ~inactive
        width = np.where(unstable, upper - lower, 1.0)
        slope = np.where(unstable, upper / width, 0.0)
        intercept = np.where(unstable, np.maximum(up(-(slope * lower)), up(upper - down(slope * upper))), 0.0)
        up_slope = np.where(active, 1.0, slope)
        adaptive = np.where(upper > -lower, 1.0, 0.0)
        chosen = adaptive if alpha is None else np.where(np.isnan(alpha), adaptive, np.clip(alpha, 0.0, 1.0))
        low_slope = np.where(active, 1.0, np.where(unstable, chosen, 0.0))
        lam = self.coefficients
        positive = lam >= 0
        coefficients = np.where(positive, lam * low_slope[:, None, :], lam * up_slope[:, None, :])
        constant = self.constant + np.einsum("bmn,bn->bm", np.where(positive, 0.0, lam), intercept)
        n = lower.shape[1]
        reach = magnitude(lower, upper)
        added = error_factor(n + 1) * (np.einsum("bmn,bn->bm", np.abs(lam), intercept + reach)
                                       + np.abs(self.constant)) + (n + 2) * TINY
        return LinearBound(coefficients, constant, self.error + added)

    def through_sshaped(self, kind: str, lower: np.ndarray, upper: np.ndarray,
                        slopes: np.ndarray | None = None) -> LinearBound:
        """Objective over ``f(z)`` (sigmoid or tanh) → over z, for z in [lower, upper] ([B, n]):
        lines with rigorous offsets (`sshaped.offsets`), so they hold exactly whatever their slopes:
        ``slopes`` [B, n, 2] (lower, upper line), those of `sshaped.relaxation` where not given
        or NaN."""
        k_low, c_low, k_up, c_up = sshaped.relaxation(kind, lower, upper)
        if slopes is not None:
            given_low, given_up = ~np.isnan(slopes[..., 0]), ~np.isnan(slopes[..., 1])
            k_low, k_up = np.where(given_low, slopes[..., 0], k_low), np.where(given_up, slopes[..., 1], k_up)
            c_low = np.where(given_low, sshaped.offsets(kind, k_low, lower, upper)[0], c_low)
            c_up = np.where(given_up, sshaped.offsets(kind, k_up, lower, upper)[1], c_up)
        lam = self.coefficients
        positive = lam >= 0
        coefficients = np.where(positive, lam * k_low[:, None, :], lam * k_up[:, None, :])
        constant = self.constant + np.einsum("bmn,bn->bm", np.maximum(lam, 0.0), c_low) \
            + np.einsum("bmn,bn->bm", np.minimum(lam, 0.0), c_up)
        n = lower.shape[1]
        slopes, offsets = np.maximum(np.abs(k_low), np.abs(k_up)), np.maximum(np.abs(c_low), np.abs(c_up))
        added = error_factor(2 * n + 1) * (np.einsum("bmn,bn->bm", np.abs(lam), slopes * magnitude(lower, upper) + offsets)
                                           + np.abs(self.constant)) + (2 * n + 2) * TINY
        return LinearBound(coefficients, constant, self.error + added)

    def with_multipliers(self, lower: np.ndarray, upper: np.ndarray,
                         multipliers: tuple[np.ndarray, np.ndarray]) -> LinearBound:
        """Add ``β_u·(z - upper) + β_l·(lower - z)`` (β clipped to >= 0; [B, n] each), never
        positive where z is within its bounds: the result bounds the objective from below on the
        points where the bounds hold."""
        to_upper, to_lower = (np.maximum(np.nan_to_num(m), 0.0) for m in multipliers)
        coefficients = self.coefficients + (to_upper - to_lower)[:, None, :]
        constant = self.constant + (-(to_upper * upper) + to_lower * lower).sum(axis=1)[:, None]
        n = lower.shape[1]
        reach = magnitude(lower, upper)
        # the sums of coefficients and multipliers, the products β·bound and their sum
        added = error_factor(3 * n + 2) * (
            np.einsum("bmn,bn->bm", np.abs(coefficients), reach) + ((to_upper + to_lower) * reach).sum(axis=1)[:, None] * 3
            + np.abs(self.constant)) + (3 * n + 4) * TINY
        return LinearBound(coefficients, constant, self.error + added)

    def minimum(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """[B, m]: a lower bound of the objective's minimum over the box [lower, upper] ([B, n])."""
        lam = self.coefficients
        value = (np.einsum("bmn,bn->bm", np.maximum(lam, 0.0), lower)
                 + np.einsum("bmn,bn->bm", np.minimum(lam, 0.0), upper) + self.constant)
        n = lower.shape[1]
        rounding = error_factor(2 * n + 1) * (np.einsum("bmn,bn->bm", np.abs(lam), magnitude(lower, upper))
                                              + np.abs(self.constant)) + (2 * n + 2) * TINY
        return down(value - up(self.error + rounding))


@dataclass
class NodeBounds:
    """Bounds on a batch of boxes: ``pre_activation[k]`` of the output of step k (before its ReLU,
    if any), and the input magnitude of every step."""

    lower: np.ndarray
    upper: np.ndarray
    pre_activation: list[tuple[np.ndarray, np.ndarray]]
    input_magnitudes: list[np.ndarray]
    empty: np.ndarray | None = None  # [B]: the box holds no point meeting the splits (own bounds cross)

    def take(self, index: np.ndarray) -> NodeBounds:
        """The bounds of boxes ``index`` (repeats allowed)."""
        return NodeBounds(self.lower[index], self.upper[index], [(l[index], u[index]) for l, u in self.pre_activation],
                          [m[index] for m in self.input_magnitudes], None if self.empty is None else self.empty[index])


Tightening = Callable[[int, NodeBounds, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def layer_bounds(network: DenseNetwork, lower: np.ndarray, upper: np.ndarray,
                 recorded: list[tuple[np.ndarray, np.ndarray]],
                 limits: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 tighten: Tightening | None = None, tightened: list[np.ndarray] | None = None) -> NodeBounds:
    """Bounds of every step's output on the boxes (mapped by the network's ``input_map`` first: the
    result's ``lower``/``upper`` are the boxes the steps see): interval bounds, tightened by back-substitution
    to the input before every activation after the first step, then widened to contain the
    ``recorded`` bounds of that activation layer (one pair per activation step, [B, n] each): the
    looser of the two.

    ``limits`` (per activation step, (lower, upper) [B, n], infinite where there is none): the
    points of each box where every activation's input is within its limits (a ReLU split is a
    limit at 0). Bounds are clamped to the limits before the recorded ones widen them, so all
    bounds hold on those points; where the clamped bounds cross (lower > upper) there is no such
    point, which ``empty`` says. ``tighten`` (activation layer, the bounds so far: every earlier
    step's, lower, upper) returns bounds of that layer's input, proven by the caller, to intersect
    with, before the limits. ``tightened`` (per activation layer, a [n] mask): back-substitution
    tightens only those neurons (the others keep their interval bounds, as sound).
    """
    lower, upper = network.input_box(lower, upper)
    bounds = NodeBounds(lower, upper, [], [], np.zeros(lower.shape[0], dtype=bool))
    h_lower, h_upper = lower, upper
    layer = 0
    for k, step in enumerate(network.steps):
        bounds.input_magnitudes.append(magnitude(h_lower, h_upper))
        z_lower, z_upper = affine_interval(step.weight, step.bias, h_lower, h_upper)
        if step.activation is not None:
            if k > 0:
                z_lower, z_upper = _tightened(network, bounds, k, z_lower, z_upper,
                                              None if tightened is None else tightened[layer])
            if tighten is not None:
                z_lower, z_upper = tighten(layer, bounds, z_lower, z_upper)
            if limits is not None:
                z_lower, z_upper = np.maximum(z_lower, limits[layer][0]), np.minimum(z_upper, limits[layer][1])
                bounds.empty |= np.any(z_lower > z_upper, axis=1)
            recorded_lower, recorded_upper = recorded[layer]
            z_lower, z_upper = np.minimum(z_lower, recorded_lower), np.maximum(z_upper, recorded_upper)
            layer += 1
        bounds.pre_activation.append((z_lower, z_upper))
        h_lower, h_upper = _activation_interval(step.activation, z_lower, z_upper)
    return bounds


def _activation_interval(activation: str | None, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if activation is None:
        return lower, upper
    if activation == "Relu":
        return np.maximum(lower, 0.0), np.maximum(upper, 0.0)
    # crossed bounds (no point meets the limits) stay crossed
    return sshaped.enclosure(activation, lower)[0], sshaped.enclosure(activation, upper)[1]


def _tightened(network: DenseNetwork, bounds: NodeBounds, k: int, z_lower: np.ndarray, z_upper: np.ndarray,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step k's output bounds intersected with back-substitution bounds, for every neuron (also
    those the interval bounds already show stable: the verifier may have tightened them, and the
    looser of its and these bounds is what the relaxations use), or for those of the mask ``rows``."""
    step = network.steps[k]
    weight, bias = (step.weight, step.bias) if rows is None else (step.weight[rows], step.bias[rows])
    batch, n = z_lower.shape[0], weight.shape[0]
    start = LinearBound(np.broadcast_to(np.concatenate([weight, -weight]), (batch, 2 * n, weight.shape[1])),
                        np.broadcast_to(np.concatenate([bias, -bias]), (batch, 2 * n)), np.zeros((batch, 2 * n)))
    found = to_input(network, bounds, start, k).minimum(bounds.lower, bounds.upper)
    if rows is None:
        return np.maximum(z_lower, found[:, :n]), np.minimum(z_upper, -found[:, n:])
    lower, upper = z_lower.copy(), z_upper.copy()
    lower[:, rows], upper[:, rows] = np.maximum(z_lower[:, rows], found[:, :n]), np.minimum(z_upper[:, rows], -found[:, n:])
    return lower, upper


def to_input(network: DenseNetwork, bounds: NodeBounds, objective: LinearBound, k: int,
             alphas: list[np.ndarray] | None = None,
             multipliers: list[tuple[np.ndarray, np.ndarray]] | None = None) -> LinearBound:
    """An objective over the input of step k, back-substituted to the network's input (with the
    slopes ``alphas`` [B, n, 2] (lower, upper line; a ReLU has only a lower one) and the
    multipliers of every activation step, in order, when given: see `through_relu`,
    `through_sshaped` and `with_multipliers`)."""
    activated = [j for j, step in enumerate(network.steps) if step.activation is not None]
    for j in range(k - 1, -1, -1):
        step = network.steps[j]
        if step.activation is not None:
            position = activated.index(j)
            slopes = None if alphas is None else alphas[position]
            if step.relu:
                objective = objective.through_relu(*bounds.pre_activation[j], None if slopes is None else slopes[..., 0])
            else:
                objective = objective.through_sshaped(step.activation, *bounds.pre_activation[j], slopes)
            if multipliers is not None:
                objective = objective.with_multipliers(*bounds.pre_activation[j], multipliers[position])
        objective = objective.through_affine(step.weight, step.bias, bounds.input_magnitudes[j])
    return objective


def lagrangian_bounds(network: DenseNetwork, bounds: NodeBounds, c: np.ndarray, d: float, alphas: list[np.ndarray],
                      multipliers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """[B]: lower bounds of ``c·y + d`` on the points of each box where its bounds hold (with its
    splits): the best of back-substitution with the given slopes and multipliers (any values
    give a valid bound: they are clipped to their ranges), back-substitution with CROWN's slopes
    and no multipliers, and intervals."""
    batch = bounds.lower.shape[0]
    last = len(network.steps) - 1
    step = network.steps[last]
    output = LinearBound(np.broadcast_to(c, (batch, 1, c.size)), np.full((batch, 1), d), np.zeros((batch, 1)))
    output = output.through_affine(step.weight, step.bias, bounds.input_magnitudes[last])
    linear = np.maximum(to_input(network, bounds, output, last, alphas, multipliers).minimum(bounds.lower, bounds.upper),
                        to_input(network, bounds, output, last).minimum(bounds.lower, bounds.upper))[:, 0]
    y_lower, y_upper = bounds.pre_activation[last]
    interval = y_lower @ np.maximum(c, 0.0) + y_upper @ np.minimum(c, 0.0) + d
    n = c.size
    rounding = error_factor(2 * n + 1) * (magnitude(y_lower, y_upper) @ np.abs(c) + abs(d)) + (2 * n + 2) * TINY
    return np.maximum(linear, down(interval - rounding))


def row_bounds(network: DenseNetwork, bounds: NodeBounds, A: np.ndarray,
               b: np.ndarray) -> tuple[np.ndarray, LinearBound]:
    """Lower bounds of every row of ``A·y - b`` on each box ([B, R]: the better of back-substitution
    and intervals), and the back-substituted linear bounds over the input."""
    batch = bounds.lower.shape[0]
    last = len(network.steps) - 1
    step = network.steps[last]
    output = LinearBound(np.broadcast_to(A, (batch, *A.shape)), np.broadcast_to(-b, (batch, b.size)),
                         np.zeros((batch, b.size)))
    output = output.through_affine(step.weight, step.bias, bounds.input_magnitudes[last])
    linear = to_input(network, bounds, output, last)
    y_lower, y_upper = bounds.pre_activation[last]
    positive, negative = np.maximum(A, 0.0), np.minimum(A, 0.0)
    interval = y_lower @ positive.T + y_upper @ negative.T - b
    n = A.shape[1]
    rounding = error_factor(2 * n + 1) * (magnitude(y_lower, y_upper) @ np.abs(A).T + np.abs(b)) + (2 * n + 2) * TINY
    interval = down(interval - rounding)
    return np.maximum(linear.minimum(bounds.lower, bounds.upper), interval), linear


def mixture_bounds(linear: LinearBound, nodes: np.ndarray, weights: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray) -> np.ndarray:
    """[Q]: lower bounds of ``Σ_i weights[q, i]·row_i`` on box ``nodes[q]`` from the rows' linear
    bounds (``weights`` [Q, R] >= 0)."""
    lam, constant, error = linear.coefficients[nodes], linear.constant[nodes], linear.error[nodes]
    R = weights.shape[1]
    x_magnitude = magnitude(lower[nodes], upper[nodes])
    mixing = error_factor(R) * (np.einsum("qr,qrn,qn->q", weights, np.abs(lam), x_magnitude)
                                + np.einsum("qr,qr->q", weights, np.abs(constant))) + (R + 1) * TINY
    mixed_error = (1.0 + error_factor(R)) * np.einsum("qr,qr->q", weights, error) + mixing
    mixed = LinearBound(np.einsum("qr,qrn->qn", weights, lam)[:, None, :], np.einsum("qr,qr->q", weights, constant)[:, None],
                        mixed_error[:, None])
    return mixed.minimum(lower[nodes], upper[nodes])[:, 0]
