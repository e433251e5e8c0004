"""IBP, CROWN and α-CROWN over a `Chain`, batched over many input boxes.

`output_bounds` answers: for each box b and each row i of the specification matrix ``C``, a sound
lower bound of ``C_i·f(x) + d_i`` over ``x`` in box b, together with the linear function of the
input that achieves it (used for branching and to propose counterexamples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .adam import Adam
from .layers import AffineLayer, Chain
from .operators import BoundAffine, BoundOperator, BoundRelu, bound_operator

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
    """min over the box of ``lam·x + bias``."""
    center, radius = ((upper + lower) / 2).unsqueeze(-1), ((upper - lower) / 2).unsqueeze(-1)
    return (lam @ center).squeeze(-1) - (lam.abs() @ radius).squeeze(-1) + bias


def _backward(ops: list[BoundOperator], last: int, lam: Tensor, bias: Tensor,
              pre: dict[int, tuple[Tensor, Tensor]], alphas: dict[int, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Propagate ``lam·h_last + bias`` back to the input through layers ``last, last-1, ..., 0``."""
    for index in range(last, -1, -1):
        op = ops[index]
        if isinstance(op, BoundAffine):
            lam, bias = op.backward(lam, bias)
        else:
            lower, upper = pre[index]
            alpha = alphas.get(index) if alphas else None
            lam, bias = op.backward(lam, bias, lower, upper, alpha)
    return lam, bias


class BoundEngine:
    """Bound computation for one chain; holds the per-layer operators."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.ops = [bound_operator(layer) for layer in chain.layers]

    def layer_bounds(self, lower: Tensor, upper: Tensor, method: Method = "crown",
                     alpha_steps: int = 20, alpha_lr: float = 0.1, prior: LayerBounds | None = None) -> LayerBounds:
        """Pre-activation bounds of every non-affine layer (CROWN intersected with IBP).

        "alpha-crown" also optimises, for every bounded neuron separately, the lower slopes of all
        ReLUs behind it (much tighter on deep networks with many inputs, and much slower).
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
        lam, offset = _backward(self.ops, index - 1, lam, offset, pre)
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
        rows = ((l_cur < 0) & (u_cur > 0)).any(dim=0).nonzero().flatten()
        if rows.numel() == 0 or not isinstance(self.ops[index + 1], BoundRelu):
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
                      layers: LayerBounds | None = None) -> OutputBound:
        """Lower bounds of ``C·f(x) + d`` on each box; ``C`` is [m, n_out] or [B, m, n_out]."""
        batch = lower.shape[0]
        C = C.to(lower.dtype).expand(batch, -1, -1) if C.dim() == 2 else C.to(lower.dtype)
        d = torch.zeros(C.shape[:2], dtype=lower.dtype, device=lower.device) if d is None else d.to(lower.dtype).expand(C.shape[:2])
        if layers is None:
            layers = self.layer_bounds(lower, upper, "ibp" if method == "ibp" else "crown")
        pre = self._pre_by_index(layers)
        if method == "ibp":
            return self._ibp_output(lower, upper, C, d, pre, layers)
        last = len(self.ops) - 1
        final = self.chain.layers[last]
        assert isinstance(final, AffineLayer)
        lam0, bias0 = C @ final.weight, d + C @ final.bias
        lam, bias = _backward(self.ops, last - 1, lam0, bias0, pre)
        # CROWN's adaptive slopes can lose to plain intervals (e.g. relu on [-1, 2]); keep the better.
        best = torch.maximum(concretize(lam, bias, lower, upper), self._ibp_output(lower, upper, C, d, pre, layers).lower)
        result = OutputBound(best, lam, bias, layers)
        if method == "alpha-crown" and alpha_steps > 0:
            with torch.enable_grad():  # callers may bound under no_grad; the slopes need gradients
                result = self._optimise_alpha(lower, upper, lam0, bias0, pre, result, alpha_steps, alpha_lr)
        return result

    def _ibp_output(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor,
                    pre: dict[int, tuple[Tensor, Tensor]], layers: LayerBounds) -> OutputBound:
        last = len(self.ops) - 1
        out_lower, out_upper = self.ops[last].interval(*self.ops[last - 1].interval(*pre[last - 1])) if last > 0 else self.ops[0].interval(lower, upper)
        center, radius = ((out_upper + out_lower) / 2).unsqueeze(-1), ((out_upper - out_lower) / 2).unsqueeze(-1)
        bound = (C @ center).squeeze(-1) - (C.abs() @ radius).squeeze(-1) + d
        return OutputBound(bound, None, None, layers)

    def _optimise_alpha(self, lower: Tensor, upper: Tensor, lam0: Tensor, bias0: Tensor,
                        pre: dict[int, tuple[Tensor, Tensor]], start: OutputBound,
                        steps: int, lr: float) -> OutputBound:
        """α-CROWN: gradient ascent on the ReLU lower slopes for the final bound.

        Any slope in [0, 1] gives a sound bound, so every iterate is sound; we keep the best
        bound seen per (box, row), starting from CROWN's own slopes (never looser than CROWN).
        """
        assert start.coefficients is not None and start.constant is not None
        best, best_lam, best_bias = self._optimise_slopes(len(self.ops) - 2, lower, upper, lam0, bias0, pre,
                                                          (start.lower, start.coefficients, start.constant), steps, lr)
        return OutputBound(best, best_lam, best_bias, start.layers)

    def _optimise_slopes(self, last: int, lower: Tensor, upper: Tensor, lam0: Tensor, bias0: Tensor,
                         pre: dict[int, tuple[Tensor, Tensor]], start: tuple[Tensor, Tensor, Tensor],
                         steps: int, lr: float) -> tuple[Tensor, Tensor, Tensor]:
        """Adam on the lower slopes of the ReLUs in ops ``0..last`` (one set per row of ``lam0``)
        for the bounds of ``lam0·h + bias0`` back-substituted from op ``last``.

        Any slope in [0, 1] gives a sound bound, so every iterate is sound; per (box, row) the best
        bound seen is kept with its linear function, starting from ``start`` (bound, λ, bias).
        """
        m = lam0.shape[1]
        alphas = {
            i: BoundRelu.default_alpha(*pre[i]).unsqueeze(1).expand(-1, m, -1).clone().requires_grad_(True)
            for i, op in enumerate(self.ops[:last + 1]) if isinstance(op, BoundRelu)
        }
        best, best_lam, best_bias = (t.detach().clone() for t in start)
        if not alphas:
            return best, best_lam, best_bias
        optimiser = Adam([(list(alphas.values()), lr)])
        for _ in range(steps):
            lam, bias = _backward(self.ops, last, lam0, bias0, pre, alphas)
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
        return best.detach(), best_lam.detach(), best_bias.detach()
