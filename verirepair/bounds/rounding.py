"""The float64 rounding error of every bound computation, derived rather than assumed.

Every bound is computed in float64 with round-to-nearest. The standard model of floating-point
arithmetic says each operation's result is the exact one times (1 + δ) with |δ| <= u = 2⁻⁵³, and a
dot product of n terms computed in any order is off by at most γ_n·Σ|terms| with
γ_n = n·u / (1 - n·u) (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1). The
functions here turn that into an explicit error per bound, from the magnitudes of the quantities
involved, so that a bound is lowered by its own worst-case error before it decides anything.

Back-substitution (CROWN and its variants) carries ``Λ·h + c``, a lower bound of the objective as a
function of some layer's values ``h``. Each step replaces it with a function of the layer below;
where the step is computed with rounding, the computed ``Λ'``, ``c'`` differ from the exact
image of ``Λ``, ``c`` by the step's rounding, whose effect on the bound is at most the step's
error term below times the largest magnitude ``|h|`` can take there (from the layer's sound
bounds). The terms are summed along the pass and subtracted from ``c`` at the end, so the
returned ``Λ·x + c`` is a lower bound of the objective in real arithmetic.

Each term over-counts: the γ indices carry a few extra operations, and `SAFETY` multiplies the sum,
which is itself computed in float64 (relative error far below 1 %). The terms are computed without
gradients: a bound lowered by a constant is as sound, and α-CROWN's steps need only the bound's
gradient.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

UNIT_ROUNDOFF = 2.0**-53
SAFETY = 1.01
# torch's float64 sigmoid/tanh: an exp (at most 1 ulp in the C library), an add and a divide, so a
# few ulps of values of magnitude <= 1. Intervals of them are widened by this much.
SIGMOID_EVALUATION_ERROR = 1e-15


def gamma(n: int) -> float:
    """γ_n = n·u / (1 - n·u): the relative error bound of a sum or dot product of n terms."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def magnitude(lower: Tensor, upper: Tensor) -> Tensor:
    """The largest |value| a quantity bounded by [lower, upper] can take."""
    return torch.maximum(lower.abs(), upper.abs())


def affine_error(lam: Tensor, bias: Tensor, abs_weight: Tensor, layer_bias: Tensor, input_magnitude: Tensor) -> Tensor:
    """[B, m]: the rounding of ``Λ' = Λ·W``, ``c' = c + Λ·b`` (``lam`` [B, m, n_out], ``abs_weight``
    = |W| [n_out, n_in], ``input_magnitude`` [B, n_in]): γ_{n_out}·|Λ|·|W|·|h| + γ_{n_out+1}·(|c| + |Λ|·|b|)."""
    n_out = abs_weight.shape[0]
    reach = input_magnitude @ abs_weight.T + layer_bias.abs()  # [B, n_out]: Σ_j |W_ij|·|h_j| + |b_i|
    return gamma(n_out + 2) * ((lam.abs() @ reach.unsqueeze(-1)).squeeze(-1) + bias.abs())


def relu_error(lam: Tensor, bias: Tensor, up_intercept: Tensor, pre_magnitude: Tensor) -> Tensor:
    """[B, m]: one ReLU back-substitution step. The chord's slope and intercept are computed with a
    few roundings each (up to 3u relative), the products ``Λ·slope`` with one, and the intercepts
    are summed into ``c``: γ_{n+6}·(|c| + |Λ|·(|z| + 2·|intercept|)) covers all of them, with the
    slope at most 1 and |z| the pre-activation's magnitude."""
    n = pre_magnitude.shape[-1]
    per_neuron = (pre_magnitude + 2 * up_intercept.abs()).unsqueeze(-1)  # [B, n, 1]
    return gamma(n + 6) * (bias.abs() + (lam.abs() @ per_neuron).squeeze(-1))


def sshaped_error(lam: Tensor, bias: Tensor, slopes: Tensor, offsets: Tensor, pre_magnitude: Tensor) -> Tensor:
    """[B, m]: one sigmoid/tanh step with lines of slope at most ``slopes`` and offset at most
    ``offsets`` in magnitude ([B, m, n]). The offsets already absorb the evaluation of f; what
    remains is the products ``Λ·k``, the line values ``k·z`` at the interval's far end (the offsets
    were computed as f(z) - k·z), and the sum into ``c``."""
    n = pre_magnitude.shape[-1]
    per_neuron = 2 * slopes.abs() * pre_magnitude.unsqueeze(-2) + offsets.abs()
    return gamma(n + 6) * (bias.abs() + (lam.abs() * per_neuron).sum(-1))


def multiplier_error(lam: Tensor, bias: Tensor, to_upper: Tensor, to_lower: Tensor, pre_magnitude: Tensor) -> Tensor:
    """[B, m]: adding ``β_u·(z - u) + β_l·(l - z)`` to ``Λ·z + c``: one rounding per coefficient and
    a sum of 2n products into ``c``."""
    n = pre_magnitude.shape[-1]
    weights = lam.abs() + 2 * (to_upper.abs() + to_lower.abs())
    return gamma(2 * n + 3) * (bias.abs() + (weights @ pre_magnitude.unsqueeze(-1)).squeeze(-1))


def concretization_error(lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """[B, m]: min over the box of ``Λ·x + c`` computed as ``Λ·centre - |Λ|·radius + c``. The centre
    and radius are rounded too, so the box they describe may miss the true one by u·(|centre| +
    radius) per side; the two dot products and the sum add γ_{n+2} each."""
    n = lower.shape[-1]
    per_input = ((upper + lower).abs() / 2 + (upper - lower) / 2).unsqueeze(-1)  # |centre| + radius
    return gamma(n + 4) * (2 * (lam.abs() @ per_input).squeeze(-1) + bias.abs())


def interval_affine_error(center: Tensor, radius: Tensor, abs_weight: Tensor, layer_bias: Tensor) -> Tensor:
    """[B, n_out]: ``W·centre + b ± |W|·radius`` computed in float64, centre and radius rounded
    (``abs_weight`` = |W|)."""
    n_in = abs_weight.shape[1]
    return gamma(n_in + 4) * (2 * ((center.abs() + radius) @ abs_weight.T) + layer_bias.abs())


def lowered(value: Tensor, error: Tensor) -> Tensor:
    """``value - SAFETY·error``, moved down by two units of its last place for the rounding of the
    subtraction and the product (differentiable, unlike ``nextafter``)."""
    result = value - SAFETY * error
    return result - 2 * UNIT_ROUNDOFF * result.abs()


def raised(value: Tensor, error: Tensor) -> Tensor:
    """``value + SAFETY·error``, moved up likewise."""
    result = value + SAFETY * error
    return result + 2 * UNIT_ROUNDOFF * result.abs()
