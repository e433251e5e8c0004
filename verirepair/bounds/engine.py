"""IBP, CROWN and α-CROWN over a `Chain`, batched over many input boxes.

`output_bounds` answers: for each box b and each row i of the specification matrix ``C``, a sound
lower bound of ``C_i·f(x) + d_i`` over ``x`` in box b, together with the linear function of the
input that achieves it (used for branching and to propose counterexamples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .adam import Adam
from .layers import AffineLayer, Chain
from .operators import BoundAffine, BoundOperator, BoundRelu, BoundSShaped, bound_operator
from .rounding import concretization_error, lowered, magnitude, multiplier_error

Tensor = torch.Tensor
Method = Literal["ibp", "crown", "alpha-crown"]


@dataclass(frozen=True)
class LayerBounds:
    """Bounds of the input of every non-affine layer, in chain order (each [B, n])."""

    pre_activation: tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True)
class OutputBound:
    lower: Tensor  # [B, m] lower bounds of C·y + d
    coefficients: Tensor | None  # [B, m, n_in]: C·y + d >= coefficients·x + constant on the box
    constant: Tensor | None
    layers: LayerBounds


def concretize(lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """A lower bound, in real arithmetic, of the min over the box of ``lam·x + bias`` (its float64
    evaluation lowered by its own rounding error)."""
    center, radius = ((upper + lower) / 2).unsqueeze(-1), ((upper - lower) / 2).unsqueeze(-1)
    value = (lam @ center).squeeze(-1) - (lam.abs() @ radius).squeeze(-1) + bias
    with torch.no_grad():
        error = concretization_error(lam, bias, lower, upper)
    return lowered(value, error)


def _affine_input_magnitudes(ops: list[BoundOperator], pre: dict[int, tuple[Tensor, Tensor]], lower: Tensor,
                             upper: Tensor) -> dict[int, Tensor]:
    """Per affine op, the largest |value| of its input on each box: the box for the first, else the
    interval of the activation before it. Made once per bound computation, not per pass."""
    return {index: magnitude(lower, upper) if index == 0 else magnitude(*ops[index - 1].interval(*pre[index - 1]))
            for index, op in enumerate(ops) if isinstance(op, BoundAffine) and (index == 0 or index - 1 in pre)}


def _backward(ops: list[BoundOperator], last: int, lam: Tensor, bias: Tensor,
              pre: dict[int, tuple[Tensor, Tensor]], input_magnitudes: dict[int, Tensor],
              alphas: dict[int, Tensor] | None = None,
              multipliers: dict[int, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Propagate ``lam·h_last + bias`` back to the input through layers ``last, last-1, ..., 0``;
    the returned bias is lowered by the float64 rounding of every step (`rounding`), so the result
    bounds the objective from below in real arithmetic. ``input_magnitudes``: per affine op, the
    largest |value| of its input (`_affine_input_magnitudes`).

    ``multipliers`` [B, m, n, 2] >= 0 per non-affine layer add ``β_u·(z - u) + β_l·(l - z)`` at
    its input ``z`` with its bounds [l, u]: never positive wherever the bounds hold, so the result
    still bounds from below on the set where they do, and the bounds' constraints reach the
    concretization over the box (they matter where the bounds were narrowed by a split).
    """
    error = torch.zeros_like(bias).detach()
    for index in range(last, -1, -1):
        op = ops[index]
        if isinstance(op, BoundAffine):
            lam, bias, step_error = op.backward(lam, bias, input_magnitudes[index])
        else:
            lower, upper = pre[index]
            alpha = alphas.get(index) if alphas else None
            lam, bias, step_error = op.backward(lam, bias, lower, upper, alpha)
            if multipliers and index in multipliers:
                to_upper, to_lower = multipliers[index][..., 0], multipliers[index][..., 1]
                with torch.no_grad():
                    step_error = step_error + multiplier_error(lam, bias, to_upper, to_lower, magnitude(lower, upper))
                lam = lam + to_upper - to_lower
                bias = bias - (to_upper * upper.unsqueeze(1)).sum(-1) + (to_lower * lower.unsqueeze(1)).sum(-1)
        error = error + step_error.detach()
    return lam, lowered(bias, error)


class BoundEngine:
    """Bound computation for one chain; holds the per-layer operators."""

    def __init__(self, chain: Chain, stop: Callable[[], bool] | None = None) -> None:
        """``stop``: asked before every α-CROWN step; once it answers True the optimisations end
        with the best bounds so far (sound at any step), so a verifier's deadline is kept."""
        self.chain = chain
        self.ops = [bound_operator(layer) for layer in chain.layers]
        self.stop = stop or (lambda: False)

    def layer_bounds(self, lower: Tensor, upper: Tensor, method: Method = "crown",
                     alpha_steps: int = 20, alpha_lr: float = 0.1, prior: LayerBounds | None = None) -> LayerBounds:
        """Pre-activation bounds of every non-affine layer (CROWN intersected with IBP).

        "alpha-crown" also optimises, for every bounded neuron separately, the slopes of all
        activations behind it (much tighter on deep networks with many inputs, and much slower).
        ``prior``: bounds known to hold on these boxes (e.g. a parent box's, in branch and bound);
        every layer's bounds are intersected with them before the next layer is bounded, so
        neurons the prior proves stable are relaxed exactly.
        """
        pre: dict[int, tuple[Tensor, Tensor]] = {}
        known = self._pre_by_index(prior) if prior is not None else {}

        def with_known(index: int, bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            if index not in known:
                return bounds
            return torch.maximum(bounds[0], known[index][0]), torch.minimum(bounds[1], known[index][1])

        current = (lower, upper)
        for index, op in enumerate(self.ops):
            if isinstance(op, BoundAffine):
                next_nonlinear = index + 1 < len(self.ops)
                current = with_known(index + 1, op.interval(*current))
                if method != "ibp" and index > 0 and next_nonlinear:
                    current = self._tightened(index, lower, upper, pre, current)
                    if method == "alpha-crown" and alpha_steps > 0:
                        with torch.enable_grad():
                            current = self._alpha_tightened(index, lower, upper, pre, current, alpha_steps, alpha_lr)
            else:
                pre[index] = with_known(index, current)
                current = op.interval(*pre[index])
        return LayerBounds(tuple(pre[i] for i in sorted(pre)))

    def _tightened(self, index: int, lower: Tensor, upper: Tensor, pre: dict[int, tuple[Tensor, Tensor]],
                   current: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``current`` bounds of affine layer ``index``'s output intersected with CROWN's.

        Before a ReLU only neurons unstable in some box of the batch are recomputed: a stable
        ReLU is relaxed exactly whatever its bounds, so tightening it cannot change anything.
        """
        layer = self.chain.layers[index]
        assert isinstance(layer, AffineLayer)
        l_cur, u_cur = current
        if isinstance(self.ops[index + 1], BoundRelu):
            rows = ((l_cur < 0) & (u_cur > 0)).any(dim=0).nonzero().flatten()
            if rows.numel() == 0:
                return current
        else:
            rows = torch.arange(layer.n_out, device=lower.device)
        weight, bias = layer.weight[rows], layer.bias[rows]
        batch = lower.shape[0]
        lam = torch.cat([weight, -weight]).unsqueeze(0).expand(batch, -1, -1)
        offset = torch.cat([bias, -bias]).unsqueeze(0).expand(batch, -1)
        lam, offset = _backward(self.ops, index - 1, lam, offset, pre,
                                _affine_input_magnitudes(self.ops, pre, lower, upper))
        bound = concretize(lam, offset, lower, upper)
        n = rows.numel()
        l_new, u_new = l_cur.clone(), u_cur.clone()
        l_new[:, rows] = torch.maximum(l_cur[:, rows], bound[:, :n])
        u_new[:, rows] = torch.minimum(u_cur[:, rows], -bound[:, n:])
        return l_new, u_new

    def _alpha_tightened(self, index: int, lower: Tensor, upper: Tensor, pre: dict[int, tuple[Tensor, Tensor]],
                         current: tuple[Tensor, Tensor], steps: int, lr: float) -> tuple[Tensor, Tensor]:
        """``current`` intersected with α-CROWN bounds of the neurons still unstable in some box."""
        layer = self.chain.layers[index]
        assert isinstance(layer, AffineLayer)
        l_cur, u_cur = current
        following = self.ops[index + 1]
        if isinstance(following, BoundRelu):
            rows = ((l_cur < 0) & (u_cur > 0)).any(dim=0).nonzero().flatten()
        elif isinstance(following, BoundSShaped):  # every neuron of non-zero width is relaxed
            rows = (u_cur > l_cur).any(dim=0).nonzero().flatten()
        else:
            return current
        if rows.numel() == 0:
            return current
        batch, n = lower.shape[0], rows.numel()
        lam0 = torch.cat([layer.weight[rows], -layer.weight[rows]]).unsqueeze(0).expand(batch, -1, -1)
        bias0 = torch.cat([layer.bias[rows], -layer.bias[rows]]).unsqueeze(0).expand(batch, -1)
        start = torch.full((batch, 2 * n), -torch.inf, dtype=lower.dtype, device=lower.device)
        unused = lam0.new_zeros(batch, 2 * n, lower.shape[1])  # no λ from a previous pass to keep
        best, _, _ = self._optimise_slopes(index - 1, lower, upper, lam0, bias0, pre, (start, unused, start), steps, lr)
        l_new, u_new = l_cur.clone(), u_cur.clone()
        l_new[:, rows] = torch.maximum(l_cur[:, rows], best[:, :n])
        u_new[:, rows] = torch.minimum(u_cur[:, rows], -best[:, n:])
        return l_new, u_new

    def _pre_by_index(self, layers: LayerBounds) -> dict[int, tuple[Tensor, Tensor]]:
        indices = [i for i, op in enumerate(self.ops) if not isinstance(op, BoundAffine)]
        return dict(zip(indices, layers.pre_activation))

    def output_bounds(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor | None = None,
                      method: Method = "crown", alpha_steps: int = 20, alpha_lr: float = 0.1,
                      layers: LayerBounds | None = None, interval_multipliers: bool = False) -> OutputBound:
        """Lower bounds of ``C·f(x) + d`` on each box; ``C`` is [m, n_out] or [B, m, n_out].

        ``interval_multipliers`` (α-CROWN only): also optimise multipliers β >= 0 on every
        non-affine layer's bounds (see `_backward`): then the result bounds ``C·f(x) + d`` on the
        points of the box where ``layers`` hold, which is all of it unless they were narrowed.
        """
        batch = lower.shape[0]
        C = C.to(lower.dtype).expand(batch, -1, -1) if C.dim() == 2 else C.to(lower.dtype)
        d = torch.zeros(C.shape[:2], dtype=lower.dtype, device=lower.device) if d is None else d.to(lower.dtype).expand(C.shape[:2])
        if layers is None:
            layers = self.layer_bounds(lower, upper, "ibp" if method == "ibp" else "crown")
        pre = self._pre_by_index(layers)
        if method == "ibp":
            return self._ibp_output(lower, upper, C, d, pre, layers)
        last = len(self.ops) - 1
        final = self.ops[last]
        assert isinstance(final, BoundAffine)
        # the first step, C·W_last, rounds too: its error comes off the starting constant, which
        # α-CROWN's passes below start from as well
        magnitudes = _affine_input_magnitudes(self.ops, pre, lower, upper)
        lam0, bias0, first_error = final.backward(C, d, magnitudes[last])
        bias0 = lowered(bias0, first_error)
        lam, bias = _backward(self.ops, last - 1, lam0, bias0, pre, magnitudes)
        # CROWN's adaptive slopes can lose to plain intervals (e.g. relu on [-1, 2]); keep the better.
        best = torch.maximum(concretize(lam, bias, lower, upper), self._ibp_output(lower, upper, C, d, pre, layers).lower)
        result = OutputBound(best, lam, bias, layers)
        if method == "alpha-crown" and alpha_steps > 0:
            with torch.enable_grad():  # callers may bound under no_grad; the slopes need gradients
                result = self._optimise_alpha(lower, upper, lam0, bias0, pre, result, alpha_steps, alpha_lr,
                                              interval_multipliers)
        return result

    def _ibp_output(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
                    pre: dict[int, tuple[Tensor, Tensor]], layers: LayerBounds) -> OutputBound:
        last = len(self.ops) - 1
        out_lower, out_upper = self.ops[last].interval(*self.ops[last - 1].interval(*pre[last - 1])) if last > 0 else self.ops[0].interval(lower, upper)
        return OutputBound(concretize(C, d, out_lower, out_upper), None, None, layers)

    def _optimise_alpha(self, lower: Tensor, upper: Tensor, lam0: Tensor, bias0: Tensor,
                        pre: dict[int, tuple[Tensor, Tensor]], start: OutputBound,
                        steps: int, lr: float, interval_multipliers: bool = False) -> OutputBound:
        """α-CROWN: gradient ascent on the activations' slopes for the final bound.

        Any ReLU lower slope in [0, 1] and any S-shaped slope gives a sound bound, so every
        iterate is sound; we keep the best bound seen per (box, row), starting from CROWN's own
        slopes (never looser than CROWN).
        """
        assert start.coefficients is not None and start.constant is not None
        best, best_lam, best_bias = self._optimise_slopes(len(self.ops) - 2, lower, upper, lam0, bias0, pre,
                                                          (start.lower, start.coefficients, start.constant), steps, lr,
                                                          interval_multipliers)
        return OutputBound(best, best_lam, best_bias, start.layers)

    def _optimise_slopes(self, last: int, lower: Tensor, upper: Tensor, lam0: Tensor, bias0: Tensor,
                         pre: dict[int, tuple[Tensor, Tensor]], start: tuple[Tensor, Tensor, Tensor],
                         steps: int, lr: float, interval_multipliers: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Adam on the slopes of the activations in ops ``0..last`` (one set per row of ``lam0``;
        ReLU lower slopes, S-shaped lower and upper slopes) for the bounds of ``lam0·h + bias0``
        back-substituted from op ``last``.

        Any ReLU slope in [0, 1] and any S-shaped slope gives a sound bound, so every iterate is
        sound; per (box, row) the best bound seen is kept with its linear function, starting from
        ``start`` (bound, λ, bias).
        """
        m = lam0.shape[1]
        alphas = {}
        for i, op in enumerate(self.ops[:last + 1]):
            if isinstance(op, (BoundRelu, BoundSShaped)):
                start_alpha = op.default_alpha(*pre[i]).unsqueeze(1)
                alphas[i] = start_alpha.expand(-1, m, *start_alpha.shape[2:]).clone().requires_grad_(True)
        multipliers = {
            i: lam0.new_zeros(lam0.shape[0], m, pre[i][0].shape[-1], 2).requires_grad_(True)
            for i, op in enumerate(self.ops[:last + 1]) if interval_multipliers and not isinstance(op, BoundAffine)
        }
        best, best_lam, best_bias = (t.detach().clone() for t in start)
        if not alphas and not multipliers:
            return best, best_lam, best_bias
        magnitudes = _affine_input_magnitudes(self.ops, pre, lower, upper)
        optimiser = Adam([(list(alphas.values()), lr), (list(multipliers.values()), lr / 2)])
        for _ in range(steps):
            if self.stop():
                break
            lam, bias = _backward(self.ops, last, lam0, bias0, pre, magnitudes, alphas, multipliers)
            bound = concretize(lam, bias, lower, upper)
            with torch.no_grad():
                better = bound > best
                best = torch.where(better, bound, best)
                best_lam = torch.where(better.unsqueeze(-1), lam, best_lam)
                best_bias = torch.where(better, bias, best_bias)
            optimiser.zero_grad()
            (-bound.sum()).backward()
            optimiser.step()
            with torch.no_grad():
                for alpha in alphas.values():
                    alpha.clamp_(0.0, 1.0)
                for multiplier in multipliers.values():
                    multiplier.clamp_(min=0.0)
        return best.detach(), best_lam.detach(), best_bias.detach()
