"""Patch networks and how several of them combine with the original network.

One region's patch (REASSURE's ``h_A``), with ``p`` the affine patch, ``g`` the support network and
``K >= max_{x in D} |p(x)|`` over the domain box ``D``::

    h_A(x) = relu(p(x) + K g(x) - K) - relu(-p(x) + K g(x) - K)

On the region ``g = 1`` and ``h_A = p``; where ``g = 0``, ``h_A = 0``; in between ``h_A`` is ``p``
soft-thresholded by ``K (1 - g)``: every output moves towards 0 by the same amount, signs kept.
A *constant* patch ``p = d`` needs none of that: ``h_A(x) = g(x)·d`` is exact on the region, zero
where ``g = 0`` and a scaled ``d`` in between (2k + 1 units instead of 2k + 3m).

**Combination.** The repaired network is ``f + Σ_A h_A`` (a plain sum, not REASSURE's telescoping
form). It is sound because every ``p`` satisfies the *cone* constraints of `patch_lp.py` on the
whole domain: for every property row ``a`` (a difference of two outputs, or one output),
``a·p(x) >= 0``. Soft-thresholding all components by the same amount is monotone, so it keeps
``a·h_A(x) >= 0`` (as does scaling a constant ``d`` by ``g >= 0``); a sum of such vectors has it too. Hence on a patched region ``A`` the output is
``f + p_A + (vectors in the cone)``, safe because ``f + p_A`` is; on an unpatched safe point it is
``f + (cone)``, still safe. A violation of the repaired network can only sit in a region that is
buggy in the original and not yet patched — which is what the check-and-fix loop feeds back.
(For other row shapes the argument does not apply; the verifier still decides.)

**Beside the original graph.** The patches form one ReLU chain of their own (`patch_mlp`), run on
the flattened input beside the original network's unchanged graph; an Add node sums the two
(`beside.patched_model`):

    layer 1: per patch: 2k support units, m units ``u = p(x) + K`` (>= 0 on D)
    layer 2: per patch: 1 unit ``g``, m units carrying ``u``
    layer 3: per patch: ``h⁺ = relu(u + K g - 2K)``, ``h⁻ = relu(-u + K g)``
    output: ``Σ h⁺ - Σ h⁻``

Constant patches have no ``u`` units, and in layer 3 they all feed one shared pair of ``m``-unit
blocks, ``Σ g·max(d, 0)`` and ``Σ g·max(-d, 0)`` (non-negative, so the ReLU is exact).

``u = relu(p + K)`` equals ``p + K`` on ``D`` (so the chain equals ``Σ h_A`` there exactly); outside
``D`` it clips ``p`` at ``-K``.

Point-wise repair writes the same sum in the stacked layout of `stacked.py` instead (every weight
stored once: this chain's block-diagonal second layer grows with the square of the patches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .regions import ReluMlp, ReluNetwork
from .support import support_first_layer, support_second_layer, support_value


@dataclass(frozen=True)
class RegionPatch:
    A: np.ndarray  # support rows (normalised), [k, n]
    b: np.ndarray
    gamma: float
    C: np.ndarray  # affine patch p(x) = C x + d, [m, n]
    d: np.ndarray
    K: float
    key: str  # activation-pattern key of the region in the original network
    norm: float  # max over the region of ||p||_inf

    @property
    def constant(self) -> bool:
        return not np.any(self.C)

    def value(self, x: np.ndarray) -> np.ndarray:
        """``h_A(x)`` by the reference formula (float64), [B, m]."""
        g = support_value(self.A, self.b, self.gamma, x)[:, None]
        if self.constant:
            return g * self.d
        p = np.atleast_2d(x) @ self.C.T + self.d
        K = self.K
        return np.maximum(p + K * g - K, 0.0) - np.maximum(-p + K * g - K, 0.0)


def patched_reference(base: ReluNetwork, patches: list[RegionPatch], x: np.ndarray) -> np.ndarray:
    """``f(x) + Σ h_A(x)`` straight from the formulas (for tests and fidelity checks)."""
    y = base.forward(x)
    for patch in patches:
        y = y + patch.value(x)
    return y


def _block(*blocks: np.ndarray) -> np.ndarray:
    return scipy.linalg.block_diag(*blocks) if blocks else np.zeros((0, 0))


def patch_mlp(patches: list[RegionPatch], n_inputs: int, n_outputs: int) -> ReluMlp:
    """One ReLU chain computing ``Σ h_A`` on the domain (see the module docstring)."""
    m = n_outputs
    first_w, first_b, second_w, second_b, third_w, third_b = [], [], [], [], [], []
    shared: list[tuple[int, np.ndarray]] = []  # constant patches: (their g unit in layer 2, weights d⁺ / d⁻)
    column = 0  # layer-2 units so far
    for patch in patches:
        k = patch.A.shape[0]
        sw, sb = support_first_layer(patch.A, patch.b, patch.gamma)
        g_row, g_bias = support_second_layer(k)
        if patch.constant:
            first_w.append(sw)
            first_b.append(sb)
            second_w.append(g_row[None, :])
            second_b.append(np.array([g_bias]))
            shared.append((column, np.concatenate([np.maximum(patch.d, 0.0), np.maximum(-patch.d, 0.0)])))
            third_w.append(np.zeros((0, 1)))  # no units of its own in layer 3
            column += 1
            continue
        first_w.append(np.vstack([sw, patch.C]))
        first_b.append(np.concatenate([sb, patch.d + patch.K]))
        w2 = np.zeros((1 + m, 2 * k + m))
        w2[0, :2 * k] = g_row
        w2[1:, 2 * k:] = np.eye(m)
        second_w.append(w2)
        second_b.append(np.concatenate([[g_bias], np.zeros(m)]))
        K = patch.K
        w3 = np.zeros((2 * m, 1 + m))
        w3[:m, 0] = K
        w3[:m, 1:] = np.eye(m)
        w3[m:, 0] = K
        w3[m:, 1:] = -np.eye(m)
        third_w.append(w3)
        third_b.append(np.concatenate([np.full(m, -2.0 * K), np.zeros(m)]))
        column += 1 + m
    third = _block(*third_w)
    if shared:  # the block shared by the constant patches: Σ g·d⁺ and Σ g·d⁻
        block = np.zeros((2 * m, column))
        for unit, signed_parts in shared:
            block[:, unit] = signed_parts
        third = np.vstack([third, block])
        third_b.append(np.zeros(2 * m))
    if not patches:
        return ReluMlp((np.zeros((m, n_inputs)),), (np.zeros(m),))
    blocks = third.shape[0] // (2 * m)
    output = np.hstack([np.hstack([np.eye(m), -np.eye(m)])] * blocks)
    return ReluMlp((np.vstack(first_w), _block(*second_w), third, output),
                   (np.concatenate(first_b), np.concatenate(second_b), np.concatenate(third_b), np.zeros(m)))
