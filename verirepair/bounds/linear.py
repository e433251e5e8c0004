"""Linear operators of the bound graph: every node that is affine in its input-dependent operands.

One class serves every ONNX operator that is affine in its dynamic operands (`LinearOperator`): it
holds the node's torch operation and its constant operands, and derives from them

* ``apply`` — the linear part (constant offsets zeroed), for any batch of inputs;
* ``abs_apply`` — the same map with every coefficient replaced by its absolute value, applied to
  non-negative inputs: what interval arithmetic and the rounding budgets need (``|A|·|h|``);
* ``transpose`` — ``Λ ↦ Λ·A`` for the backward (CROWN) pass, through torch's vector-Jacobian
  product of ``apply``: for a convolution that is the transposed convolution, never a dense matrix;
* ``bias`` — the output at zero input.

`Dense` (Gemm, MatMul) and `Convolution` replace the generic transpose by the direct one: they
are the hot path, and the generic product also runs the forward map once.

Shapes: values carry a batch dimension first, ``[B, *shape]``; linear functions of a value are
``Λ`` [B, m, *shape] with a bias [B, m].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F

from .rounding import gamma, lowered, raised

Tensor = torch.Tensor
Role = Literal["weight", "offset", "keep"]
"""What a constant operand is to the linear map: ``weight`` (a coefficient: its absolute value in
``abs_apply``), ``offset`` (an additive constant: zero in ``apply``) or ``keep`` (shapes, axes,
variances: the same everywhere)."""


@dataclass(frozen=True, eq=False)
class LinearOperator:
    """``operation(*operands)`` where the operands at ``dynamic`` positions are values of the graph and
    the others are ``constants`` (with their `Role`).

    ``signs``: per dynamic operand, the sign of all its coefficients (``-1`` for the subtrahend of
    a Sub, for Neg), so that ``abs_apply`` is ``apply`` on sign-corrected magnitudes with absolute
    weights. ``copy``: every output element is one input element or a constant (Reshape, Slice,
    Concat, Pad, ...), so intervals and back-substitution through it are exact.
    """

    op_type: str
    operation: Callable[..., Tensor]
    arity: int
    dynamic: tuple[int, ...]
    constants: dict[int, Tensor]
    roles: dict[int, Role]
    signs: tuple[int, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    copy: bool = False
    bias: Tensor | None = field(default=None)
    shape_only: bool = False  # the output is the operand's values in the same order (Flatten, Reshape, ...)
    elementwise: bool = False  # each output element is a multiple of the same operand element, plus a constant

    def __post_init__(self) -> None:
        if self.bias is None:
            zeros = [torch.zeros((1,) + shape, dtype=torch.float64, device=self._device) for shape in self.input_shapes]
            bias = self._call(zeros, self.constants).reshape((1,) + self.output_shape)
            object.__setattr__(self, "bias", bias[0] if bool((bias != 0).any()) else torch.zeros(0))

    @property
    def _device(self) -> torch.device:
        return next(iter(self.constants.values())).device if self.constants else torch.device("cpu")

    @property
    def has_bias(self) -> bool:
        assert self.bias is not None
        return self.bias.numel() > 0

    @property
    def terms(self) -> int:
        """A bound on the number of terms of any dot product or sum this node's forward or backward
        step computes (the γ index of its rounding budget)."""
        return max([math.prod(self.output_shape)] + [math.prod(s) for s in self.input_shapes]) + 4

    def _call(self, dynamic_values: list[Tensor], constants: dict[int, Tensor]) -> Tensor:
        operands: list[Tensor | None] = [None] * self.arity
        for position, value in zip(self.dynamic, dynamic_values):
            operands[position] = value
        for position, value in constants.items():
            operands[position] = value
        return self.operation(*operands)

    @cached_property
    def _linear_constants(self) -> dict[int, Tensor]:
        return {p: (torch.zeros_like(c) if self.roles[p] == "offset" else c) for p, c in self.constants.items()}

    @cached_property
    def _abs_constants(self) -> dict[int, Tensor]:
        return {p: (c.abs() if self.roles[p] == "weight" else torch.zeros_like(c) if self.roles[p] == "offset" else c)
                for p, c in self.constants.items()}

    def forward(self, *xs: Tensor) -> Tensor:
        return self._call(list(xs), self.constants)

    def apply(self, *xs: Tensor) -> Tensor:
        return self._call(list(xs), self._linear_constants)

    def abs_apply(self, *magnitudes: Tensor) -> Tensor:
        return self._call([s * m for s, m in zip(self.signs, magnitudes)], self._abs_constants)

    @cached_property
    def diagonal(self) -> Tensor | None:
        """The coefficients of an element-wise map (``elementwise``): ``apply`` of ones; else None."""
        if not self.elementwise:
            return None
        return self.apply(torch.ones((1,) + self.output_shape, dtype=torch.float64, device=self._device))[0]

    def transpose(self, lam: Tensor) -> list[Tensor]:
        """``Λ·A`` per dynamic operand, for ``lam`` [N, *output_shape] (N rows of any origin)."""
        if self.shape_only:
            return [lam.reshape((lam.shape[0],) + self.input_shapes[0])]
        if self.diagonal is not None:
            return [lam * self.diagonal]
        zeros = [lam.new_zeros((lam.shape[0],) + shape) for shape in self.input_shapes]
        _, pullback = torch.func.vjp(self.apply, *zeros)
        return list(pullback(lam))

    def interval(self, bounds: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        if self.copy:
            lower = self.forward(*[l for l, _ in bounds])
            return lower, self.forward(*[u for _, u in bounds])
        centers = [(u + l) / 2 for l, u in bounds]
        radii = [(u - l) / 2 for l, u in bounds]
        mid = self.forward(*centers)
        spread = self.abs_apply(*radii)
        error = gamma(self.terms) * (2 * self.abs_apply(*[c.abs() + r for c, r in zip(centers, radii)])
                                     + (self.bias.abs() if self.has_bias else 0.0))
        return lowered(mid - spread, error), raised(mid + spread, error)

    def reach(self, magnitudes: list[Tensor]) -> Tensor | None:
        """``|A|·|h| + |b|`` [B, *output_shape] for operands of magnitudes ``|h|``: what one unit of
        relative rounding in a backward step can cost (None: the step is exact)."""
        if self.copy:
            return self.bias.abs().expand((magnitudes[0].shape[0],) + self.output_shape) if self.has_bias else None
        reach = self.abs_apply(*magnitudes)
        return reach + self.bias.abs() if self.has_bias else reach

    def backward(self, lam: Tensor, bias: Tensor, reach: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """``Λ·h + c`` at the output → the same function of the operands: per operand ``Λ·A``, the
        new bias ``c + Λ·b`` and the step's float64 rounding error [B, m] (see `rounding`; None when
        exact), with ``reach`` from `reach`."""
        batch, rows = lam.shape[:2]
        flat = lam.reshape((batch * rows,) + self.output_shape)
        parts = [part.reshape((batch, rows) + shape) for part, shape in zip(self.transpose(flat), self.input_shapes)]
        new_bias = bias + (lam.flatten(2) @ self.bias.reshape(-1, 1)).squeeze(-1) if self.has_bias else bias
        if reach is None:
            return parts, new_bias, None
        with torch.no_grad():
            error = gamma(self.terms) * ((lam.abs().flatten(2) @ reach.flatten(1).unsqueeze(-1)).squeeze(-1) + bias.abs())
        return parts, new_bias, error

    def matrices(self, chunk_entries: int = 2**24) -> list[Tensor]:
        """The matrix [n_out, n_in] (sparse COO, float64) of the map from each dynamic operand
        (flattened) to the output, by applying the linear part to basis vectors in chunks of about
        ``chunk_entries`` dense entries (for exact encodings: a convolution keeps only its kernel's
        non-zeros)."""
        n_out = math.prod(self.output_shape)
        chunk = max(1, chunk_entries // max(1, n_out))
        result = []
        for position, shape in enumerate(self.input_shapes):
            n_in = math.prod(shape)
            indices, values = [], []
            for first in range(0, n_in, chunk):
                count = min(chunk, n_in - first)
                operands = [torch.zeros((count,) + s, dtype=torch.float64, device=self._device) for s in self.input_shapes]
                basis = operands[position].reshape(count, n_in)
                basis[torch.arange(count), first + torch.arange(count)] = 1.0
                columns = self.apply(*operands).reshape(count, n_out).T.to_sparse()
                indices.append(columns.indices() + torch.tensor([[0], [first]], device=columns.device))
                values.append(columns.values())
            result.append(torch.sparse_coo_tensor(torch.cat(indices, dim=1), torch.cat(values), (n_out, n_in),
                                                  check_invariants=True).coalesce())
        return result

    def to(self, device: torch.device | str) -> LinearOperator:
        assert self.bias is not None
        return replace(self, constants={p: c.to(device) for p, c in self.constants.items()}, bias=self.bias.to(device))


def _dense_operation(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x @ weight.T if bias is None else x @ weight.T + bias


def dense(weight: Tensor, bias: Tensor | None, input_shape: tuple[int, ...], op_type: str = "Gemm") -> LinearOperator:
    """``x @ weightᵀ + bias`` over the last axis (Gemm, MatMul with a constant right operand)."""
    constants = {1: weight} if bias is None else {1: weight, 2: bias}
    roles: dict[int, Role] = {1: "weight", 2: "offset"}
    output_shape = input_shape[:-1] + (int(weight.shape[0]),)
    return Dense(op_type, _dense_operation, 3, (0,), constants, {p: roles[p] for p in constants}, (1,),
                 (input_shape,), output_shape)


class Dense(LinearOperator):
    """`LinearOperator` whose transpose is one matrix product."""

    @property
    def weight(self) -> Tensor:
        return self.constants[1]

    @property
    def terms(self) -> int:
        return max(int(self.weight.shape[0]), int(self.weight.shape[1])) + 4

    def transpose(self, lam: Tensor) -> list[Tensor]:
        return [lam @ self.weight]

    def matrices(self, chunk_entries: int = 2**24) -> list[Tensor]:
        if len(self.input_shapes[0]) == 1:
            return [self.weight.to_sparse()]
        return super().matrices(chunk_entries)


@dataclass(frozen=True, eq=False)
class Convolution(LinearOperator):
    """A Conv node (operands x, W[, b]; `convolution_operation`): the transpose is the
    transposed convolution (`torch.nn.grad.conv*_input`), then the padding is cropped."""

    pads: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1

    def transpose(self, lam: Tensor) -> list[Tensor]:
        rank = len(self.strides)
        spatial = self.input_shapes[0][1:]
        padded = tuple(size + self.pads[i] + self.pads[i + rank] for i, size in enumerate(spatial))
        grad_input = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input}[rank]
        full = grad_input((lam.shape[0], self.input_shapes[0][0]) + padded, self.constants[1], lam,
                          stride=self.strides, dilation=self.dilations, groups=self.group)
        crop = tuple(slice(self.pads[i], self.pads[i] + spatial[i]) for i in range(rank))
        return [full[(slice(None), slice(None)) + crop]]


def convolution_operation(pads: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
                          group: int) -> Callable[..., Tensor]:
    """ONNX Conv semantics over [N, C, *spatial] (explicit, possibly asymmetric, zero padding)."""
    rank = len(strides)
    order: list[int] = []
    for axis in reversed(range(rank)):
        order += [pads[axis], pads[axis + rank]]
    conv = {1: F.conv1d, 2: F.conv2d}[rank]

    def convolve(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        x = F.pad(x, order) if any(pads) else x
        return conv(x, weight, bias, stride=strides, dilation=dilations, groups=group)

    return convolve
