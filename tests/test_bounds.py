"""Bound engine tests: every bound is checked against the true function, never against itself.

- Soundness: for random ReLU/sigmoid/tanh MLPs, max-pool chains and lowered conv networks over
  random (batches of) boxes, every sampled output (uniform points, points on faces, all vertices of
  small boxes) lies within [lower, upper] from IBP, CROWN and α-CROWN (upper via ``-C``).
- Relaxations against dense grids of true values (sigmoid/tanh lines on 10k points per interval),
  and every operator's backward step against sampled points of its input box.
- Ordering results that theory guarantees (and a documented case where it does not).
- Pre-activation bounds contain sampled pre-activations; batching and device do not change bounds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dense_chain import ActivationLayer, AffineLayer, Chain, MaxPoolLayer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_nets import (
    conv_chain,
    forward_layers,
    random_box,
    random_maxpool_chain,
    random_mlp,
    random_windows,
    sample_box,
)

from verirepair.bounds import BoundEngine, BoundMaxPool, BoundRelu, BoundSShaped
from verirepair.bounds.linear import dense

# Outputs here are O(10); float64 evaluation of the network and of the bounds differs from exact
# arithmetic by ~1e-14, so 1e-9 separates rounding from a real soundness failure.
TOLERANCE = 1e-9
SAMPLES = 1500
METHODS = ("ibp", "crown", "alpha-crown")
KINDS = ("relu", "sigmoid", "tanh", "maxpool", "conv")
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_chain(kind: str, seed: int) -> Chain:
    rng = np.random.default_rng(seed)
    if kind == "maxpool":
        return random_maxpool_chain(rng, n_in=int(rng.integers(1, 5)), n_out=int(rng.integers(1, 4)))
    if kind == "conv":
        return conv_chain(seed % 4)
    hidden = [int(h) for h in rng.integers(2, 9, size=int(rng.integers(1, 4)))]
    return random_mlp(rng, int(rng.integers(1, 6)), hidden, int(rng.integers(1, 4)), kind,
                      scale=float(rng.choice([0.5, 1.5, 3.0])))


def spec_matrix(rng: np.random.Generator, n_out: int, batch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity rows plus random rows (shared, or one matrix per box when ``batch`` is given)."""
    m = n_out + 2
    shape = (m, n_out) if batch is None else (batch, m, n_out)
    C = rng.normal(size=shape)
    C[..., :n_out, :] = np.eye(n_out)
    d = rng.normal(size=m)
    return torch.tensor(C), torch.tensor(d)


def check_bounds_contain(engine: BoundEngine, lower: torch.Tensor, upper: torch.Tensor,
                         C: torch.Tensor, d: torch.Tensor, points: torch.Tensor) -> None:
    """Every value ``C·f(x) + d`` at ``points`` [B, P, n] lies within each method's bounds."""
    batch, count, n = points.shape
    y = engine.graph.forward(points.reshape(-1, n)).reshape(batch, count, -1)
    Cb = C if C.dim() == 3 else C.expand(batch, -1, -1)
    values = torch.einsum("bmo,bpo->bpm", Cb, y) + d  # [B, P, m]
    for method in METHODS:
        low = engine.output_bounds(lower, upper, C, d, method=method, alpha_steps=10).lower
        up = -engine.output_bounds(lower, upper, -C, -d, method=method, alpha_steps=10).lower
        assert torch.isfinite(low).all() and torch.isfinite(up).all(), method
        below = (low.unsqueeze(1) - values).max().item()
        above = (values - up.unsqueeze(1)).max().item()
        assert below <= TOLERANCE, f"{method}: a sampled value is {below:.3g} below the lower bound"
        assert above <= TOLERANCE, f"{method}: a sampled value is {above:.3g} above the upper bound"


# ---- soundness on whole networks ---------------------------------------------------------------
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), batch=st.integers(1, 4),
       width=st.sampled_from([0.01, 0.3, 1.0, 4.0]), degenerate=st.booleans(), per_box_C=st.booleans())
def test_output_bounds_contain_sampled_outputs(kind: str, seed: int, batch: int, width: float,
                                               degenerate: bool, per_box_C: bool) -> None:
    chain = make_chain(kind, seed)
    engine = BoundEngine(chain.graph)
    rng = np.random.default_rng(seed + 1)
    lower, upper = random_box(rng, chain.n_inputs, batch, width, degenerate)
    C, d = spec_matrix(rng, chain.n_outputs, batch if per_box_C else None)
    check_bounds_contain(engine, lower, upper, C, d, sample_box(rng, lower, upper, SAMPLES))


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh"])
def test_output_bounds_sound_on_deep_wide_boxes(kind: str) -> None:
    """Deeper nets over wide boxes: many unstable neurons, saturated sigmoids."""
    for seed in range(3):
        chain = random_mlp(seed, 4, [8, 8, 8], 3, kind, scale=2.5)
        lower, upper = random_box(seed, 4, batch=3, width=6.0)
        C, d = spec_matrix(np.random.default_rng(seed), 3, None)
        check_bounds_contain(BoundEngine(chain.graph), lower, upper, C, d, sample_box(seed, lower, upper, 4000))


def test_output_bounds_without_offset_vector() -> None:
    chain = random_mlp(7, 3, [5, 5], 2)
    lower, upper = random_box(7, 3, batch=2)
    engine = BoundEngine(chain.graph)
    C = torch.eye(2, dtype=F64)
    for method in METHODS:
        without = engine.output_bounds(lower, upper, C, method=method, alpha_steps=5).lower
        with_zero = engine.output_bounds(lower, upper, C, torch.zeros(2, dtype=F64), method=method, alpha_steps=5).lower
        torch.testing.assert_close(without, with_zero, rtol=0, atol=1e-12)


def test_point_box_bounds_are_exact_for_crown() -> None:
    """On a box of zero width every neuron is stable (or sits on its kink) and the bound is f(x)."""
    chain = random_mlp(3, 3, [6, 6], 2)
    x = torch.tensor([[0.3, -0.2, 0.9]], dtype=F64)
    y = chain.forward(x)
    for method in METHODS:
        low = BoundEngine(chain.graph).output_bounds(x, x, torch.eye(2, dtype=F64), method=method).lower
        torch.testing.assert_close(low, y, rtol=0, atol=1e-12)


# ---- relaxations against dense grids -------------------------------------------------------------
GRID = 10_000


def interval_cases() -> list[tuple[float, float]]:
    """Narrow, very wide, all-negative, all-positive, saturated and straddling intervals."""
    cases = [(-1.0, 1.0), (-0.1, 2.0), (-3.0, 0.5), (0.0, 5.0), (-5.0, 0.0),
             (-50.0, 50.0), (-200.0, 150.0), (-1000.0, 999.0),
             (-8.0, -0.5), (-40.0, -20.0), (-700.0, -600.0), (0.5, 8.0), (20.0, 40.0), (600.0, 700.0),
             (-1e-3, 1e-3), (2.0, 2.0), (-3.0, -3.0), (0.0, 0.0)]
    for center in (-7.5, -1.3, 0.0, 0.4, 2.2, 15.0):
        for width in (1e-13, 1e-11, 1e-9, 1e-7, 1e-5, 1e-2):
            cases.append((center - width / 2, center + width / 2))
    return cases


def check_lines_on_grid(op: BoundSShaped, lower: torch.Tensor, upper: torch.Tensor) -> None:
    """``k_low·x + c_low <= f(x) <= k_up·x + c_up`` on a 10k-point grid of every interval."""
    k_low, c_low, k_up, c_up = op.relaxation(lower, upper)
    for t in (k_low, c_low, k_up, c_up):
        assert torch.isfinite(t).all()
    steps = torch.linspace(0, 1, GRID, dtype=F64)
    x = lower.unsqueeze(-1) + steps * (upper - lower).unsqueeze(-1)
    x = torch.cat([x, lower.unsqueeze(-1), upper.unsqueeze(-1)], dim=-1)
    fx = op.f(x)
    low_gap = (k_low.unsqueeze(-1) * x + c_low.unsqueeze(-1) - fx).max(-1).values
    up_gap = (fx - k_up.unsqueeze(-1) * x - c_up.unsqueeze(-1)).max(-1).values
    worst = int(torch.argmax(torch.maximum(low_gap, up_gap)))
    assert low_gap.max() <= TOLERANCE and up_gap.max() <= TOLERANCE, (
        f"{op.kind} on [{lower[worst].item()!r}, {upper[worst].item()!r}]: lower line above f by "
        f"{low_gap[worst].item():.3g}, upper line below f by {up_gap[worst].item():.3g}")
    # never looser at the midpoint than the interval bound [f(l), f(u)] the lines compete with
    mid = (lower + upper) / 2
    width_at_mid = (k_up - k_low) * mid + c_up - c_low
    assert (width_at_mid <= op.f(upper) - op.f(lower) + 1e-9).all()


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_s_shaped_relaxation_on_fixed_intervals(kind: str) -> None:
    cases = torch.tensor(interval_cases(), dtype=F64)
    check_lines_on_grid(BoundSShaped(kind), cases[:, 0], cases[:, 1])


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["sigmoid", "tanh"]), start=st.floats(-60, 60),
       log_width=st.floats(-13, 2.5), shape=st.sampled_from(["any", "negative", "positive"]))
def test_s_shaped_relaxation_on_random_intervals(kind: str, start: float, log_width: float, shape: str) -> None:
    width = 10.0 ** log_width
    lower = {"any": start, "negative": -abs(start) - width, "positive": abs(start)}[shape]
    check_lines_on_grid(BoundSShaped(kind), torch.tensor([lower], dtype=F64),
                        torch.tensor([lower + width], dtype=F64))


def test_relu_lines_on_grid() -> None:
    rng = np.random.default_rng(0)
    lower = torch.tensor(np.concatenate([rng.uniform(-5, 5, 200), [-1.0, 0.0, -2.0, 1.0]]))
    upper = lower + torch.tensor(np.concatenate([rng.uniform(0, 5, 200) * (rng.random(200) > 0.1), [0.0, 3.0, 2.0, 0.0]]))
    x = lower.unsqueeze(-1) + torch.linspace(0, 1, GRID, dtype=F64) * (upper - lower).unsqueeze(-1)
    slope, intercept = BoundRelu.upper_line(lower, upper)
    assert (torch.relu(x) <= slope.unsqueeze(-1) * x + intercept.unsqueeze(-1) + TOLERANCE).all()
    for alpha in (BoundRelu.default_alpha(lower, upper), torch.zeros_like(lower), torch.ones_like(lower),
                  torch.tensor(rng.random(lower.shape[0]))):
        # the lower line the operator uses: alpha·x for unstable neurons, the exact function otherwise
        low_slope = torch.where(lower >= 0, 1.0, torch.where(upper <= 0, 0.0, alpha))
        assert (low_slope.unsqueeze(-1) * x <= torch.relu(x) + TOLERANCE).all()


def check_backward_valid(op, lower: torch.Tensor, upper: torch.Tensor, points: torch.Tensor,  # type: ignore[no-untyped-def]
                         seed: int, alpha: torch.Tensor | None = None) -> None:
    """``Λ·op(x) + β >= Λ'·x + β' - error`` at every sampled ``x`` for a random mixed-sign ``Λ``, and
    the step's rounding error is a small non-negative number."""
    rng = np.random.default_rng(seed)
    batch, count, n = points.shape
    out = op.forward(points.reshape(-1, n)).reshape(batch, count, -1)
    lam = torch.tensor(rng.normal(size=(batch, 3, out.shape[-1])))
    lam[:, 0] = lam[:, 0].abs()  # one all-positive and one all-negative row: pure lower/upper lines
    lam[:, 1] = -lam[:, 1].abs()
    bias = torch.tensor(rng.normal(size=(batch, 3)))
    new_lam, new_bias, error = op.backward(lam, bias, lower, upper, alpha)
    assert (error >= 0).all() and (error < 1e-9).all()
    true = torch.einsum("bmo,bpo->bpm", lam, out) + bias.unsqueeze(1)
    linear = torch.einsum("bmi,bpi->bpm", new_lam, points) + (new_bias - error).unsqueeze(1)
    excess = (linear - true).max().item()
    assert excess <= TOLERANCE, f"backward bound exceeds the true value by {excess:.3g}"


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(["relu", "sigmoid", "tanh"]), seed=st.integers(0, 2**31),
       width=st.sampled_from([1e-8, 0.1, 1.0, 5.0, 30.0]), random_alpha=st.booleans())
def test_activation_backward_valid_on_samples(kind: str, seed: int, width: float, random_alpha: bool) -> None:
    n, batch = 6, 3
    lower, upper = random_box(seed, n, batch, width)
    lower, upper = lower * 3, upper * 3
    op = BoundRelu() if kind == "relu" else BoundSShaped(kind)
    alpha = None
    if random_alpha:  # ReLU lower slopes in [0, 1]; S-shaped slopes anywhere (their offsets are exact)
        shape = (batch, 3, n) if kind == "relu" else (batch, 3, n, 2)
        alpha = torch.tensor(np.random.default_rng(seed).uniform(0 if kind == "relu" else -2, 1 if kind == "relu" else 3, shape))
    check_backward_valid(op, lower, upper, sample_box(seed, lower, upper, 3000, vertices=False), seed, alpha)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), dominant=st.booleans(), size=st.integers(1, 4))
def test_maxpool_backward_valid_on_samples(seed: int, dominant: bool, size: int) -> None:
    rng = np.random.default_rng(seed)
    n_in, n_windows, batch = 8, 5, 3
    layer = MaxPoolLayer(random_windows(rng, n_in, n_windows, size), n_in)
    lower, upper = random_box(rng, n_in, batch, 1.0, degenerate=True)
    if dominant:  # lift one input of each window above the rest, so the exact (dominant) line is used
        for window in layer.windows.tolist():
            lower[:, window[0]] += 5.0
            upper[:, window[0]] += 5.0
    op = BoundMaxPool(layer.windows, layer.n_in)
    check_backward_valid(op, lower, upper, sample_box(rng, lower, upper, 3000), seed)
    # the interval bounds contain the samples too
    points = sample_box(rng, lower, upper, 500)
    out = op.forward(points.reshape(-1, n_in)).reshape(batch, -1, n_windows)
    low, up = op.interval(lower, upper)
    assert (out >= low.unsqueeze(1)).all() and (out <= up.unsqueeze(1)).all()


# ---- how the methods compare --------------------------------------------------------------------
def crown_with_zero_lower_slopes(chain: Chain, lower: torch.Tensor, upper: torch.Tensor,
                                 C: torch.Tensor) -> torch.Tensor:
    """CROWN on ``Affine → ReLU → Affine`` with every unstable lower slope 0, built from the
    public operator steps (the pre-activation bounds are the engine's)."""
    first, relu, last = chain.layers
    assert isinstance(first, AffineLayer) and isinstance(relu, ActivationLayer) and isinstance(last, AffineLayer)
    (pre,) = BoundEngine(chain.graph).layer_bounds(lower, upper, "crown").pre_activation
    batch = lower.shape[0]
    hidden = BoundRelu().interval(*pre)
    assert hidden[0].shape == pre[0].shape
    (lam,), bias, _ = dense(last.weight, last.bias, (last.n_in,)).backward(
        C.expand(batch, -1, -1), torch.zeros(batch, C.shape[0], dtype=F64), None)
    lam, bias, _ = BoundRelu().backward(lam, bias, *pre, torch.zeros(batch, C.shape[0], pre[0].shape[1], dtype=F64))
    (lam,), bias, _ = dense(first.weight, first.bias, (first.n_in,)).backward(lam, bias, None)
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    return torch.einsum("bmi,bi->bm", lam, center) - torch.einsum("bmi,bi->bm", lam.abs(), radius) + bias


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31), width=st.sampled_from([0.05, 0.5, 2.0]))
def test_one_hidden_layer_crown_dominates_ibp(seed: int, width: float) -> None:
    """Theory for one hidden ReLU layer: with the same (exact) pre-activation bounds, each term of
    the back-substituted bound is at least IBP's term when unstable neurons take the lower line
    y >= 0 and the chord (which attains u at the top), and minimising jointly over the box can only
    raise the sum. So CROWN with lower slopes 0 is never looser than IBP; α-CROWN (which optimises
    the slopes starting from CROWN's) and CROWN itself, when every neuron is stable, neither."""
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    chain = random_mlp(rng, n_in, [int(rng.integers(2, 9))], n_out)
    engine = BoundEngine(chain.graph)
    lower, upper = random_box(rng, n_in, 4, width)
    C = torch.tensor(rng.normal(size=(3, n_out)))
    ibp = engine.output_bounds(lower, upper, C, method="ibp").lower
    zero_slopes = crown_with_zero_lower_slopes(chain, lower, upper, C)
    assert (zero_slopes >= ibp - TOLERANCE).all()
    crown = engine.output_bounds(lower, upper, C, method="crown").lower
    assert (crown >= ibp - TOLERANCE).all()  # the engine keeps IBP where CROWN's slopes lose


def test_crown_keeps_ibp_where_the_adaptive_slope_loses() -> None:
    """y = relu(x) on [-1, 2]: CROWN's adaptive slope picks y >= x (u > -l), whose bound is -1,
    while IBP gets the exact 0. The engine keeps the better of the two, so CROWN answers 0 (less
    its float64 rounding budget, at most a few ulps here); α-CROWN, free to move the slope to 0,
    gets 0 too."""
    one = torch.ones(1, 1, dtype=F64)
    chain = Chain((AffineLayer(one, torch.zeros(1, dtype=F64)), ActivationLayer("relu", 1),
                   AffineLayer(one, torch.zeros(1, dtype=F64))))
    engine = BoundEngine(chain.graph)
    lower, upper = torch.tensor([[-1.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64)
    bound = {m: engine.output_bounds(lower, upper, one, method=m).lower.item() for m in METHODS}
    assert -1e-13 <= bound["ibp"] <= 0.0 and bound["crown"] == bound["ibp"]
    assert bound["alpha-crown"] >= -1e-6


@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), width=st.sampled_from([0.1, 1.0, 3.0]))
def test_alpha_crown_never_looser_than_crown(kind: str, seed: int, width: float) -> None:
    chain = make_chain(kind, seed)
    engine = BoundEngine(chain.graph)
    rng = np.random.default_rng(seed)
    lower, upper = random_box(rng, chain.n_inputs, 3, width)
    C, d = spec_matrix(rng, chain.n_outputs, None)
    crown = engine.output_bounds(lower, upper, C, d, method="crown")
    alpha = engine.output_bounds(lower, upper, C, d, method="alpha-crown", alpha_steps=10)
    assert (alpha.lower >= crown.lower).all()
    # the returned linear function is a lower bound too; the returned bound is at least its minimum
    # (more where the interval bound beat CROWN)
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    for result in (crown, alpha):
        value = (torch.einsum("bmi,bi->bm", result.coefficients, center)
                 - torch.einsum("bmi,bi->bm", result.coefficients.abs(), radius) + result.constant)
        assert (result.lower >= value - 1e-9).all()


# ---- pre-activation bounds, batching, device ----------------------------------------------------
@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), batch=st.integers(1, 3),
       width=st.sampled_from([0.05, 0.5, 2.0]))
def test_layer_bounds_contain_sampled_pre_activations(kind: str, seed: int, batch: int, width: float) -> None:
    chain = make_chain(kind, seed)
    engine = BoundEngine(chain.graph)
    lower, upper = random_box(seed, chain.n_inputs, batch, width)
    points = sample_box(seed, lower, upper, SAMPLES)
    _, inputs = forward_layers(chain, points.reshape(-1, chain.n_inputs))
    ibp = engine.layer_bounds(lower, upper, "ibp").pre_activation
    crown = engine.layer_bounds(lower, upper, "crown").pre_activation
    alpha = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=5).pre_activation
    assert len(ibp) == len(crown) == len(alpha) == len(inputs)
    for k, values in enumerate(inputs):
        values = values.reshape(batch, points.shape[1], -1)
        for name, (low, up) in (("ibp", ibp[k]), ("crown", crown[k]), ("alpha-crown", alpha[k])):
            assert (values >= low.unsqueeze(1) - TOLERANCE).all(), f"{name} layer {k}: lower bound too high"
            assert (values <= up.unsqueeze(1) + TOLERANCE).all(), f"{name} layer {k}: upper bound too low"
        # CROWN's layer bounds are intersected with interval bounds: never wider than IBP's
        # (up to rounding: centre/radius interval arithmetic is monotone only up to an ulp)
        assert (crown[k][0] >= ibp[k][0] - 1e-12).all() and (crown[k][1] <= ibp[k][1] + 1e-12).all()
        assert (alpha[k][0] >= ibp[k][0] - 1e-12).all() and (alpha[k][1] <= ibp[k][1] + 1e-12).all()


@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), width=st.sampled_from([0.5, 2.0]),
       fraction=st.floats(0.05, 0.9))
def test_bounds_inherited_from_a_parent_box_hold_and_never_widen(kind: str, seed: int, width: float,
                                                               fraction: float) -> None:
    """A sub-box bounded with its parent's bounds as prior: still sound on samples of the sub-box,
    within the prior and within its own bounds without the prior."""
    chain = make_chain(kind, seed)
    engine = BoundEngine(chain.graph)
    lower, upper = random_box(seed, chain.n_inputs, 1, width)
    parent = engine.layer_bounds(lower, upper, "crown")
    rng = np.random.default_rng(seed)
    child_lower = lower + torch.tensor(rng.random(lower.shape) * (1 - fraction), dtype=F64) * (upper - lower)
    child_upper = child_lower + fraction * (upper - lower)
    inherited = engine.layer_bounds(child_lower, child_upper, "crown", prior=parent).pre_activation
    alone = engine.layer_bounds(child_lower, child_upper, "crown").pre_activation
    points = sample_box(seed, child_lower, child_upper, SAMPLES)
    _, inputs = forward_layers(chain, points.reshape(-1, chain.n_inputs))
    for k, values in enumerate(inputs):
        low, up = inherited[k]
        assert (values >= low - TOLERANCE).all() and (values <= up + TOLERANCE).all(), f"layer {k}: unsound"
        assert (low >= parent.pre_activation[k][0] - 1e-12).all() and (up <= parent.pre_activation[k][1] + 1e-12).all()
    # The first layer's bounds use nothing before them: the prior can only cut them further.
    assert (inherited[0][0] >= alone[0][0] - 1e-12).all() and (inherited[0][1] <= alone[0][1] + 1e-12).all()


@pytest.mark.parametrize("kind", KINDS)
def test_batched_boxes_match_one_at_a_time(kind: str) -> None:
    chain = make_chain(kind, 11)
    engine = BoundEngine(chain.graph)
    lower, upper = random_box(11, chain.n_inputs, 4, 1.0)
    C, d = spec_matrix(np.random.default_rng(11), chain.n_outputs, None)
    for method in ("ibp", "crown"):
        together = engine.output_bounds(lower, upper, C, d, method=method).lower
        alone = torch.cat([engine.output_bounds(lower[i:i + 1], upper[i:i + 1], C, d, method=method).lower
                           for i in range(4)])
        torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "conv"])
def test_layer_bounds_do_not_depend_on_the_chunk_size(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neurons bounded in one chunk, one at a time, or under the narrow networks' budget: the same
    back-substitution per neuron, so the same bounds (up to the order of float64 sums)."""
    from verirepair.bounds import engine as engine_module

    chain = make_chain(kind, 13)
    lower, upper = random_box(13, chain.n_inputs, 5, 1.0)
    monkeypatch.setattr(engine_module, "NARROW_WIDTH", 0)
    whole = BoundEngine(chain.graph, chunk_bytes=1e12).layer_bounds(lower, upper, "crown").pre_activation
    single = BoundEngine(chain.graph, chunk_bytes=1.0).layer_bounds(lower, upper, "crown").pre_activation
    monkeypatch.setattr(engine_module, "NARROW_WIDTH", 10**9)
    monkeypatch.setattr(engine_module, "NARROW_CHUNK_BYTES", 1.0)
    narrow = BoundEngine(chain.graph, chunk_bytes=1e12).layer_bounds(lower, upper, "crown").pre_activation
    for ours in (single, narrow):
        for (low, up), (low_whole, up_whole) in zip(ours, whole):
            torch.testing.assert_close(low, low_whole, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(up, up_whole, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device; the bound engine's device test needs one")
@pytest.mark.parametrize("kind", ["relu", "sigmoid", "maxpool", "conv"])
def test_bounds_on_cuda_match_cpu_and_are_sound(kind: str) -> None:
    chain = make_chain(kind, 5)
    lower, upper = random_box(5, chain.n_inputs, 3, 1.0)
    C, d = spec_matrix(np.random.default_rng(5), chain.n_outputs, None)
    cpu, gpu = BoundEngine(chain.graph), BoundEngine(chain.graph.to("cuda"))
    for method in METHODS:
        expected = cpu.output_bounds(lower, upper, C, d, method=method, alpha_steps=10).lower
        got = gpu.output_bounds(lower.cuda(), upper.cuda(), C.cuda(), d.cuda(), method=method, alpha_steps=10).lower
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-6)
    check_bounds_contain(gpu, lower.cuda(), upper.cuda(), C.cuda(), d.cuda(),
                         sample_box(5, lower, upper, SAMPLES).cuda())


@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31), width=st.sampled_from([0.05, 0.5, 2.0]),
       method=st.sampled_from(("crown", "alpha-crown")))
def test_returned_linear_lower_bound_holds_at_sampled_points(kind: str, seed: int, width: float, method: str) -> None:
    """Branch and bound combines the per-row linear functions (clause bounds, counterexample
    probes), so they must be valid pointwise, not only their minima: C·f(x) + d >= a·x + c."""
    chain = make_chain(kind, seed)
    engine = BoundEngine(chain.graph)
    rng = np.random.default_rng(seed)
    lower, upper = random_box(rng, chain.n_inputs, 2, width)
    C, d = spec_matrix(rng, chain.n_outputs, None)
    result = engine.output_bounds(lower, upper, C, d, method=method, alpha_steps=5)
    points = sample_box(rng, lower, upper, 2000)  # [B, P, n]
    values = chain.forward(points.reshape(-1, chain.n_inputs)).reshape(points.shape[0], points.shape[1], -1)
    spec_values = torch.einsum("mo,bpo->bpm", C, values) + d
    linear = torch.einsum("bmi,bpi->bpm", result.coefficients, points) + result.constant.unsqueeze(1)
    assert (spec_values >= linear - TOLERANCE).all()


def test_own_adam_follows_torch_adam_on_a_quadratic() -> None:
    from verirepair.bounds.adam import Adam

    generator = torch.Generator().manual_seed(3)
    target = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    ours_a = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    ours_b = torch.ones(5, dtype=torch.float64, requires_grad=True)
    theirs_a, theirs_b = (t.detach().clone().requires_grad_(True) for t in (ours_a, ours_b))
    ours = Adam([([ours_a], 0.05), ([ours_b], 0.2)])
    theirs = torch.optim.Adam([{"params": [theirs_a], "lr": 0.05}, {"params": [theirs_b], "lr": 0.2}])
    for _ in range(300):
        for optimiser, a, b in ((ours, ours_a, ours_b), (theirs, theirs_a, theirs_b)):
            optimiser.zero_grad()
            ((a - target).pow(2).sum() + (b.pow(2) - b).pow(2).sum()).backward()
            optimiser.step()
    assert torch.allclose(ours_a, theirs_a, atol=1e-10)
    assert torch.allclose(ours_b, theirs_b, atol=1e-10)
    assert float((ours_a - target).detach().abs().max()) < 0.1 * float(target.abs().max())  # and it does minimise


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_alpha_crown_tightens_s_shaped_networks(kind: str) -> None:
    """α-CROWN optimises S-shaped slopes too: never looser than CROWN on any row, strictly tighter
    in total on deep nets over wide boxes, and still sound on samples."""
    for seed in range(3):
        chain = random_mlp(seed, 4, [8, 8, 8], 3, kind, scale=2.5)
        engine = BoundEngine(chain.graph)
        lower, upper = random_box(seed, 4, batch=2, width=2.0)
        C, d = spec_matrix(np.random.default_rng(seed), 3, None)
        crown = engine.output_bounds(lower, upper, C, d, method="crown").lower
        alpha = engine.output_bounds(lower, upper, C, d, method="alpha-crown", alpha_steps=30).lower
        assert (alpha >= crown - 1e-12).all()
        assert float((alpha - crown).sum()) > 1e-3
        points = sample_box(seed, lower, upper, 4000)
        y = chain.forward(points.reshape(-1, 4)).reshape(2, -1, chain.n_outputs)
        values = torch.einsum("bmo,bpo->bpm", C.expand(2, -1, -1), y) + d
        assert (values >= alpha.unsqueeze(1) - TOLERANCE).all()
