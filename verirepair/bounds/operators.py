"""The non-linear operators of the bound graph: concrete forward, interval bounds and backward
linear relaxations (with the optimisable slopes α where they have them).

Backward propagation works on a linear function ``Λ·h + bias`` of an operator's output ``h`` and
returns a lower-bounding function of its input, with the float64 rounding error of that step
([B, m], see `rounding`; the caller subtracts the sum). These operators work on flattened values:
``Λ`` is [B, m, n_out], ``bias`` is [B, m]; interval bounds are [B, n], widened by their rounding.
Only *lower* bounds are propagated; an upper bound is the negated lower bound of ``-Λ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rounding import (
    SIGMOID_EVALUATION_ERROR,
    gamma,
    magnitude,
    relu_error,
    sshaped_error,
)

Tensor = torch.Tensor
# Slack added to the offsets of sigmoid/tanh relaxations: they come from evaluating f at a few
# points in float64, whose rounding error is below 1e-15; 1e-12 absorbs it with room to spare.
RELAXATION_SLACK = 1e-12


def _split(lam: Tensor) -> tuple[Tensor, Tensor]:
    return lam.clamp(min=0), lam.clamp(max=0)


@dataclass(frozen=True)
class BoundRelu:
    """ReLU: upper bound is the chord; lower bound slope ``alpha`` in [0, 1] (optimisable)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def to(self, device: torch.device | str) -> BoundRelu:
        return self

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return lower.clamp(min=0), upper.clamp(min=0)

    @staticmethod
    def default_alpha(lower: Tensor, upper: Tensor) -> Tensor:
        """CROWN's adaptive lower slope: 1 where the positive side dominates, else 0."""
        return (upper > -lower).to(lower.dtype)

    @staticmethod
    def upper_line(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        unstable = (lower < 0) & (upper > 0)
        width = torch.where(unstable, upper - lower, torch.ones_like(lower))
        slope = torch.where(unstable, upper / width, (lower >= 0).to(lower.dtype))
        intercept = torch.where(unstable, -upper * lower / width, torch.zeros_like(lower))
        return slope, intercept

    def backward(self, lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor,
                 alpha: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        # Written for few passes over the large [B, m, n] tensors: this is the hot loop of BaB.
        up_slope, up_intercept = self.upper_line(lower, upper)
        with torch.no_grad():
            error = relu_error(lam, bias, up_intercept, magnitude(lower, upper))
        if alpha is None:
            alpha = self.default_alpha(lower, upper).unsqueeze(1)
        low_slope = torch.where((lower >= 0).unsqueeze(1), torch.ones_like(alpha),
                                torch.where((upper <= 0).unsqueeze(1), torch.zeros_like(alpha), alpha))
        negative = lam.clamp(max=0)
        new_bias = bias + (negative @ up_intercept.unsqueeze(-1)).squeeze(-1)
        new_lam = lam * torch.where(lam >= 0, low_slope, up_slope.unsqueeze(1))
        return new_lam, new_bias, error


@dataclass(frozen=True)
class BoundSShaped:
    """Sigmoid or tanh: a lower and an upper line, each with the exact offset for its slope.

    For a slope ``k`` the tightest offsets are ``min``/``max`` of ``f(x) - k·x`` on [l, u], attained
    at an end point or where ``f'(x) = k``; those stationary points have a closed form for both
    functions, so every candidate line is sound (up to `RELAXATION_SLACK`). Each side picks, among
    the chord slope, the end-point and mid-point derivatives and 0 (the interval bound), the line
    with the smallest mean gap to ``f`` over [l, u].

    Because the offsets are exact for *any* slope, α-CROWN may optimise both slopes freely: its
    ``alpha`` is [B, m, n, 2] (lower, upper slope per row and neuron) in units of the largest
    derivative, so the same step size and [0, 1] range serve ReLU and S-shaped slopes alike.
    """

    kind: str

    @property
    def max_derivative(self) -> float:
        return 0.25 if self.kind == "sigmoid" else 1.0

    def default_alpha(self, lower: Tensor, upper: Tensor) -> Tensor:
        """[B, n, 2]: the slopes of the lines `relaxation` picks, where α-CROWN starts."""
        k_low, _, k_up, _ = self.relaxation(lower, upper)
        return torch.stack([k_low, k_up], dim=-1) / self.max_derivative

    def f(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) if self.kind == "sigmoid" else torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        y = self.f(x)
        return y * (1 - y) if self.kind == "sigmoid" else 1 - y * y

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x)

    def to(self, device: torch.device | str) -> BoundSShaped:
        return self

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return self.f(lower) - SIGMOID_EVALUATION_ERROR, self.f(upper) + SIGMOID_EVALUATION_ERROR

    def _stationary_points(self, slope: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "sigmoid":
            root = torch.sqrt((1 - 4 * slope).clamp(min=0))
            return torch.logit((1 - root) / 2), torch.logit((1 + root) / 2)
        t = torch.sqrt((1 - slope).clamp(min=0))
        return torch.atanh(-t), torch.atanh(t)

    def _offsets(self, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Exact min and max of ``f(x) - slope·x`` on [l, u] (minus/plus the slack). The
        candidate points are not differentiated: at an interior extremum the derivative in the
        point vanishes, so the offset's gradient in the slope is ``-x`` at the extremum."""
        candidates = [lower, upper]
        for point in self._stationary_points(slope.detach()):
            point = torch.nan_to_num(point, nan=0.0)
            candidates.append(torch.minimum(torch.maximum(point, lower), upper))
        gaps = torch.stack([self.f(c) - slope * c for c in candidates])
        return gaps.min(0).values - RELAXATION_SLACK, gaps.max(0).values + RELAXATION_SLACK

    def relaxation(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(k_low, c_low, k_up, c_up): ``k_low·x + c_low <= f(x) <= k_up·x + c_up`` on [l, u]."""
        width = upper - lower
        narrow = width < 1e-9
        mid = (upper + lower) / 2
        chord = (self.f(upper) - self.f(lower)) / torch.where(narrow, torch.ones_like(width), width)
        slopes = [torch.where(narrow, self.derivative(mid), chord), self.derivative(lower),
                  self.derivative(upper), self.derivative(mid), torch.zeros_like(mid)]
        best_low = best_up = None
        for slope in slopes:
            low, up = self._offsets(slope, lower, upper)
            low_score, up_score = slope * mid + low, -(slope * mid + up)  # larger is tighter
            if best_low is None:
                best_low, best_up = (slope, low, low_score), (slope, up, up_score)
                continue
            take = low_score > best_low[2]
            best_low = tuple(torch.where(take, new, old) for new, old in zip((slope, low, low_score), best_low))
            take = up_score > best_up[2]
            best_up = tuple(torch.where(take, new, old) for new, old in zip((slope, up, up_score), best_up))
        assert best_low is not None and best_up is not None
        return best_low[0], best_low[1], best_up[0], best_up[1]

    def backward(self, lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor,
                 alpha: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        pre_magnitude = magnitude(lower, upper)
        if alpha is None:
            k_low, c_low, k_up, c_up = (t.unsqueeze(1) for t in self.relaxation(lower, upper))
        else:
            k_low, k_up = alpha[..., 0] * self.max_derivative, alpha[..., 1] * self.max_derivative
            lower, upper = lower.unsqueeze(1), upper.unsqueeze(1)
            c_low, c_up = self._offsets(k_low, lower, upper)[0], self._offsets(k_up, lower, upper)[1]
        positive, negative = _split(lam)
        new_bias = bias + (positive * c_low).sum(-1) + (negative * c_up).sum(-1)
        slopes = torch.maximum(k_low.abs(), k_up.abs()).expand_as(lam)
        offsets = torch.maximum(c_low.abs(), c_up.abs()).expand_as(lam)
        with torch.no_grad():
            error = sshaped_error(lam, bias, slopes, offsets, pre_magnitude)
        return positive * k_low + negative * k_up, new_bias, error


@dataclass(frozen=True)
class BoundMaxPool:
    """``y = max(window)``: lower line ``y >= x_j*`` (j* has the largest lower bound); upper line
    ``y = x_j*`` when j* dominates the window, else the constant ``max_j u_j``."""

    windows: Tensor  # [n_out, k] indices into the flattened input
    n_in: int

    @property
    def n_out(self) -> int:
        return int(self.windows.shape[0])

    def to(self, device: torch.device | str) -> BoundMaxPool:
        return BoundMaxPool(self.windows.to(device), self.n_in)

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.windows].amax(dim=-1)

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        windows = self.windows
        return lower[:, windows].amax(-1), upper[:, windows].amax(-1)

    def backward(self, lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor,
                 alpha: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The lines' coefficients are 0 or 1 (exact); the scatter adds up to n_out terms per input
        and the constant sums n_out products, each bounded by the window's magnitude."""
        windows = self.windows
        win_lower, win_upper = lower[:, windows], upper[:, windows]  # [B, out, k]
        best = win_lower.argmax(-1, keepdim=True)
        best_index = torch.gather(windows.expand(lower.shape[0], -1, -1), 2, best).squeeze(-1)  # [B, out]
        best_lower = torch.gather(win_lower, 2, best).squeeze(-1)
        others_upper = win_upper.scatter(2, best, float("-inf")).amax(-1)
        dominant = best_lower >= others_upper
        positive, negative = _split(lam)
        linear_part = positive + negative * dominant.unsqueeze(1)
        constant = (negative * (~dominant * win_upper.amax(-1)).unsqueeze(1)).sum(-1)
        new_lam = torch.zeros(lam.shape[:2] + (self.n_in,), dtype=lam.dtype, device=lam.device)
        new_lam.scatter_add_(2, best_index.unsqueeze(1).expand(-1, lam.shape[1], -1), linear_part)
        window_magnitude = magnitude(win_lower, win_upper).amax(-1)  # [B, out]
        with torch.no_grad():
            error = gamma(2 * self.n_out + 2) * (bias.abs() + 2 * (lam.abs() @ window_magnitude.unsqueeze(-1)).squeeze(-1))
        return new_lam, bias + constant, error


NonlinearOperator = BoundRelu | BoundSShaped | BoundMaxPool
