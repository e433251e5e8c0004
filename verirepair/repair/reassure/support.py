"""The support network ``g_A``: exactly 1 on a region, exactly 0 a little way outside it.

For a region ``{x : A x <= b}`` with rows scaled to unit length in box-normalised coordinates,
``s_i(x) = b_i - A_i x`` is the (normalised) distance by which ``x`` satisfies row ``i``. With

    clip_γ(s) = relu(γ s + 1) - relu(γ s)          (1 for s >= 0, 0 for s <= -1/γ, linear between)
    g_A(x)    = relu( Σ_i clip_γ(s_i(x)) - k + 1 )  (k rows)

``g_A = 1`` on the region, ``g_A = 0`` as soon as one row is violated by ``1/γ`` or more, and
``0 <= g_A <= 1`` everywhere. ``γ`` is the sharpness: the band ``1/γ`` is the only place outside
the region the patch can reach.

Choosing ``γ``. In verirepair's construction the band cannot break the property (see
`patch.py`: partial patches only push outputs further into the safe set), so ``γ`` only trades
locality against how finely the verifier must split near region boundaries. `automatic_gamma`
takes a band of a fixed fraction of the region's inradius, clipped to a range; the strategy uses a
much smaller fraction for point-wise repair (nothing box-wide to prove, locality is all that
matters: with REASSURE's HCAS semantics the whole training set sits within 1e-5 box-widths of
the patched regions).
"""

from __future__ import annotations

import numpy as np

# Band = BAND_FRACTION × inradius (normalised units), clipped to [MIN_BAND, MAX_BAND].
BAND_FRACTION = 0.05
MIN_BAND = 1e-9
MAX_BAND = 1e-2


def automatic_gamma(inradius: float, fraction: float = BAND_FRACTION) -> float:
    band = float(np.clip(fraction * inradius, MIN_BAND, MAX_BAND))
    return 1.0 / band


def support_value(A: np.ndarray, b: np.ndarray, gamma: float, x: np.ndarray) -> np.ndarray:
    """``g_A`` at points ``x`` [B, n] (the reference formula, float64)."""
    s = gamma * (b[None, :] - np.atleast_2d(x) @ A.T)
    clipped = np.maximum(s + 1.0, 0.0) - np.maximum(s, 0.0)
    return np.maximum(clipped.sum(axis=1) - A.shape[0] + 1.0, 0.0)


def support_first_layer(A: np.ndarray, b: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights/bias of the first hidden layer: units ``γ s_i + 1`` then ``γ s_i`` (2k units)."""
    W = np.vstack([-gamma * A, -gamma * A])
    bias = np.concatenate([gamma * b + 1.0, gamma * b])
    return W, bias


def support_second_layer(k: int) -> tuple[np.ndarray, float]:
    """Weights over the 2k first-layer units and the bias of the single ``g_A`` unit."""
    return np.concatenate([np.ones(k), -np.ones(k)]), 1.0 - k
