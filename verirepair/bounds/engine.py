"""IBP, CROWN and α-CROWN over a `BoundGraph`, batched over many input boxes.

`output_bounds` answers: for each box b and each row i of the specification matrix ``C``, a sound
lower bound of ``C_i·f(x) + d_i`` over ``x`` in box b, together with the linear function of the
input that achieves it (used for branching and to propose counterexamples).

Back-substitution walks the graph backwards from a value: each node turns the linear function of
its output into one of its operands (`LinearOperator.backward`, the relaxations of `operators`),
and where a value feeds several nodes their contributions are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .adam import Adam
from .graph import BoundGraph
from .linear import Dense, LinearOperator
from .operators import BoundRelu, BoundSShaped
from .rounding import concretization_error, gamma, lowered, magnitude, multiplier_error

Tensor = torch.Tensor
Method = Literal["ibp", "crown", "alpha-crown"]


class Intervals(dict[str, tuple[Tensor, Tensor]]):
    """Interval bounds of the values, with the rounding reach (`LinearOperator.reach`) of every
    linear node made once per bound computation (a value's bounds are final once it is read)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.reaches: dict[int, Tensor | None] = {}

# Memory for one back-substitution's coefficient tensors (``Λ`` of the widest value it passes,
# float64): the neurons of an intermediate layer are bounded in chunks that fit, so the memory of
# bounding a layer grows with its activations, not with their square.
BACKWARD_CHUNK_BYTES = 256e6
# Networks whose values are all at most this wide (dense layers) are bounded in chunks of at most
# `NARROW_CHUNK_BYTES` instead: their matrix products stay efficient on a few rows, and
# temporaries of this size are reused by the memory allocator (larger ones are mapped afresh and
# paged in on every operation) and stay nearer the caches.
NARROW_WIDTH, NARROW_CHUNK_BYTES = 1024, 8e6


@dataclass(frozen=True)
class LayerBounds:
    """Bounds of the input of every non-linear node, in `BoundGraph.nonlinear` order (each [B, n])."""

    pre_activation: tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True)
class Relaxation:
    """α-CROWN's parameters per non-linear node (keys: node index), [B, m, n, ...] each: the
    activations' slopes and the multipliers β >= 0 on their input bounds (see `BoundEngine._backward`)."""

    slopes: dict[int, Tensor]
    multipliers: dict[int, Tensor]


@dataclass(frozen=True)
class IntermediateSlopes:
    """The α-CROWN slopes behind the bounds of some neurons of a non-linear node's input (see
    `BoundEngine.layer_bounds`): rows ``neurons`` (flat indices), their lower bounds then their
    negated upper bounds, ``improved`` [B, 2n] where the optimised bound beat the one before it."""

    neurons: Tensor  # [n]
    improved: Tensor  # [B, 2n]
    slopes: dict[int, Tensor]  # per non-linear node behind: [B, 2n, n_i]


@dataclass(frozen=True)
class OutputBound:
    lower: Tensor  # [B, m] lower bounds of C·y + d
    coefficients: Tensor | None  # [B, m, n_in]: C·y + d >= coefficients·x + constant on the box
    constant: Tensor | None
    layers: LayerBounds
    relaxation: Relaxation | None = None  # the best parameters per (box, row), when asked for
    node_coefficients: dict[int, Tensor] | None = None  # λ [B, m, n] at each non-linear node's output (starting parameters)


def concretize(lam: Tensor, bias: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """A lower bound, in real arithmetic, of the min over the box of ``lam·x + bias`` (its float64
    evaluation lowered by its own rounding error)."""
    center, radius = ((upper + lower) / 2).unsqueeze(-1), ((upper - lower) / 2).unsqueeze(-1)
    value = (lam @ center).squeeze(-1) - (lam.abs() @ radius).squeeze(-1) + bias
    with torch.no_grad():
        error = concretization_error(lam, bias, lower, upper)
    return lowered(value, error)


def _flat(bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return bounds[0].flatten(1), bounds[1].flatten(1)


class BoundEngine:
    """Bound computation for one graph."""

    def __init__(self, graph: BoundGraph, stop: Callable[[], bool] | None = None,
                 chunk_bytes: float = BACKWARD_CHUNK_BYTES) -> None:
        """``stop``: asked before every α-CROWN step and every chunk of neurons re-bounded by CROWN;
        once it answers True the optimisations end with the best bounds so far and the neurons left
        keep their interval bounds (sound either way), so a verifier's deadline is kept."""
        self.graph = graph
        self.stop = stop or (lambda: False)
        self.chunk_bytes = chunk_bytes

    # ---- interval pass -------------------------------------------------------------------------
    def _shaped(self, value: str, bounds: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        shape = (bounds[0].shape[0],) + self.graph.shapes[value]
        return bounds[0].reshape(shape), bounds[1].reshape(shape)

    def _with_known(self, value: str, bounds: tuple[Tensor, Tensor], known: dict[int, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``bounds`` of ``value`` intersected with the known bounds of the non-linear nodes it feeds."""
        for consumer in self.graph.consumers.get(value, ()):
            if consumer in known:
                low, up = self._shaped(value, known[consumer])
                bounds = torch.maximum(bounds[0], low), torch.minimum(bounds[1], up)
        return bounds

    def _node_interval(self, index: int, values: Intervals, pre: dict[int, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        node = self.graph.nodes[index]
        if isinstance(node.op, LinearOperator):
            return node.op.interval([values[v] for v in node.inputs])
        return self._shaped(node.output, node.op.interval(*pre[index]))

    def _intervals(self, lower: Tensor, upper: Tensor, pre: dict[int, tuple[Tensor, Tensor]]) -> Intervals:
        """Interval bounds of every value, narrowed to ``pre`` where a non-linear node reads it."""
        graph = self.graph
        values = Intervals({graph.input: self._with_known(graph.input, self._shaped(graph.input, (lower, upper)), pre)})
        for index, node in enumerate(graph.nodes):
            if index not in pre and not node.is_linear:
                pre[index] = _flat(values[node.inputs[0]])
            values[node.output] = self._with_known(node.output, self._node_interval(index, values, pre), pre)
        return values

    # ---- back-substitution ---------------------------------------------------------------------
    def _backward(self, start: str, lam: Tensor, bias: Tensor, pre: dict[int, tuple[Tensor, Tensor]], values: Intervals,
                  alphas: dict[int, Tensor] | None = None, multipliers: dict[int, Tensor] | None = None,
                  record: dict[int, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Propagate ``lam·v + bias`` (``lam`` [B, m, *shape of v]) from value ``start`` back to the
        input; the returned bias is lowered by the float64 rounding of every step (`rounding`), so
        the result bounds the objective from below in real arithmetic.

        ``multipliers`` [B, m, n, 2] >= 0 per non-linear node add ``β_u·(z - u) + β_l·(l - z)`` at
        its input ``z`` with its bounds [l, u]: never positive wherever the bounds hold, so the
        result still bounds from below on the set where they do, and the bounds' constraints reach
        the concretization over the box (they matter where the bounds were narrowed by a split).
        ``record``: filled with the λ reaching each non-linear node's output (detached, [B, m, n]).
        """
        graph = self.graph
        batch, rows = lam.shape[:2]
        reaches = values.reaches
        if start == graph.input:
            return lam.reshape(batch, rows, -1), bias
        pending = {start: lam}
        error = torch.zeros_like(bias).detach()
        for index in range(graph.producer[start], -1, -1):
            node = graph.nodes[index]
            lam_out = pending.pop(node.output, None)
            if lam_out is None:
                continue
            if isinstance(node.op, LinearOperator):
                if index not in reaches:
                    reaches[index] = node.op.reach([magnitude(*values[v]) for v in node.inputs])
                parts, bias, step_error = node.op.backward(lam_out, bias, reaches[index])
            else:
                low, up = pre[index]
                if record is not None:
                    record[index] = lam_out.reshape(batch, rows, -1).detach()
                alpha = alphas.get(index) if alphas else None
                flat, bias, step_error = node.op.backward(lam_out.reshape(batch, rows, -1), bias, low, up, alpha)
                if multipliers and index in multipliers:
                    to_upper, to_lower = multipliers[index][..., 0], multipliers[index][..., 1]
                    with torch.no_grad():
                        step_error = step_error + multiplier_error(flat, bias, to_upper, to_lower, magnitude(low, up))
                    flat = flat + to_upper - to_lower
                    bias = bias - (to_upper * up.unsqueeze(1)).sum(-1) + (to_lower * low.unsqueeze(1)).sum(-1)
                parts = [flat.reshape((batch, rows) + graph.shapes[node.inputs[0]])]
            if step_error is not None:
                error = error + step_error.detach()
            for value, part in zip(node.inputs, parts):
                if value in pending:  # a value read by several nodes: the contributions add up
                    with torch.no_grad():
                        reach = magnitude(*values[value]).unsqueeze(1)
                        error = error + gamma(2) * ((pending[value].abs() + part.abs()) * reach).flatten(2).sum(-1)
                    pending[value] = pending[value] + part
                else:
                    pending[value] = part
        at_input = pending.get(graph.input)
        if at_input is None:
            at_input = lam.new_zeros((batch, rows, graph.n_inputs))
        return at_input.reshape(batch, rows, -1), lowered(bias, error)

    # ---- intermediate bounds -------------------------------------------------------------------
    def layer_bounds(self, lower: Tensor, upper: Tensor, method: Method = "crown",
                     alpha_steps: int = 20, alpha_lr: float = 0.1, prior: LayerBounds | None = None,
                     kept_slopes: dict[int, list[IntermediateSlopes]] | None = None) -> LayerBounds:
        """Bounds of the input of every non-linear node (CROWN intersected with IBP).

        "alpha-crown" also optimises, for every bounded neuron separately, the slopes of all
        activations behind it (much tighter on deep networks with many inputs, and much slower).
        ``prior``: bounds known to hold on these boxes (e.g. a parent box's, in branch and bound);
        every value's bounds are intersected with them before the next node is bounded, so
        neurons the prior proves stable are relaxed exactly. ``kept_slopes`` (α-CROWN): filled,
        per non-linear node (index), with the slopes of the optimised bounds of its input's
        neurons, so that each bound can be re-derived by one back-substitution (a certificate's).
        """
        graph = self.graph
        known = self._by_index(prior) if prior is not None else {}
        pre: dict[int, tuple[Tensor, Tensor]] = {}
        values = Intervals({graph.input: self._with_known(graph.input, self._shaped(graph.input, (lower, upper)), known)})
        for index, node in enumerate(graph.nodes):
            if not node.is_linear:
                pre[index] = _flat(values[node.inputs[0]])
            current = self._with_known(node.output, self._node_interval(index, values, pre), known)
            readers = [graph.nodes[c].op for c in graph.consumers.get(node.output, ()) if not graph.nodes[c].is_linear]
            if readers and method != "ibp" and node.is_linear and node.output in graph.after_nonlinear:
                relu_only = all(isinstance(op, BoundRelu) for op in readers)
                current = self._tightened(node.output, lower, upper, pre, values, current, relu_only, None, alpha_lr)
                if method == "alpha-crown" and alpha_steps > 0 and any(isinstance(op, (BoundRelu, BoundSShaped)) for op in readers):
                    found: list[IntermediateSlopes] | None = None if kept_slopes is None else []
                    with torch.enable_grad():
                        current = self._tightened(node.output, lower, upper, pre, values, current, relu_only,
                                                  alpha_steps, alpha_lr, found)
                    if found:
                        reader = next(c for c in graph.consumers[node.output] if not graph.nodes[c].is_linear)
                        kept_slopes.setdefault(reader, []).extend(found)  # type: ignore[union-attr]
            values[node.output] = current
        return LayerBounds(tuple(pre[i] for i in graph.nonlinear))

    def _tightened(self, value: str, lower: Tensor, upper: Tensor, pre: dict[int, tuple[Tensor, Tensor]],
                   values: Intervals, current: tuple[Tensor, Tensor], relu_only: bool, alpha_steps: int | None,
                   alpha_lr: float, kept: list[IntermediateSlopes] | None = None) -> tuple[Tensor, Tensor]:
        """``current`` bounds of ``value`` intersected with CROWN's (α-CROWN's with ``alpha_steps``;
        ``kept`` gets the slopes of the optimised bounds that improved).

        Before ReLUs only neurons unstable in some box are recomputed: a stable ReLU is relaxed
        exactly whatever its bounds, so tightening it cannot change anything. The neurons go
        through in chunks whose coefficient tensors fit `chunk_bytes`.
        """
        low_flat, up_flat = _flat(current)
        open_rows = (low_flat < 0) & (up_flat > 0) if relu_only else up_flat > low_flat
        rows = open_rows.any(dim=0).nonzero().flatten()
        if rows.numel() == 0:
            return current
        batch, shape = lower.shape[0], self.graph.shapes[value]
        widest = max(math.prod(self.graph.shapes[v]) for i in self.graph.ancestors(value)
                     for v in (*self.graph.nodes[i].inputs, self.graph.nodes[i].output))
        budget = self.chunk_bytes if widest > NARROW_WIDTH else min(self.chunk_bytes, NARROW_CHUNK_BYTES)
        chunk = max(1, int(budget // (2 * batch * widest * lower.element_size() * (3 if alpha_steps else 1))))
        low_new, up_new = low_flat.clone(), up_flat.clone()
        producer = self.graph.nodes[self.graph.producer[value]]
        for first in range(0, rows.numel(), chunk):
            if self.stop():  # the rows left keep their interval bounds: looser, as sound
                break
            part = rows[first:first + chunk]
            n = part.numel()
            start = value
            if isinstance(producer.op, Dense) and len(producer.op.input_shapes[0]) == 1:
                # the rows of a dense layer are its weight rows: start one step back, exactly
                start = producer.inputs[0]
                weight = producer.op.weight[part]
                lam0 = torch.cat([weight, -weight]).unsqueeze(0).expand(batch, -1, -1)
                offset = producer.op.bias[part] if producer.op.has_bias else weight.new_zeros(n)
                bias0 = torch.cat([offset, -offset]).unsqueeze(0).expand(batch, -1)
            else:
                lam0 = lower.new_zeros((batch, 2 * n, math.prod(shape)))
                lam0[:, torch.arange(n), part] = 1.0
                lam0[:, n + torch.arange(n), part] = -1.0
                lam0 = lam0.reshape((batch, 2 * n) + shape)
                bias0 = lower.new_zeros((batch, 2 * n))
            if alpha_steps:
                unbounded = torch.full((batch, 2 * n), -torch.inf, dtype=lower.dtype, device=lower.device)
                bound, _, _, relaxation = self._optimise_slopes(start, lower, upper, lam0, bias0, pre, values,
                                                                (unbounded, None, None), alpha_steps, alpha_lr,
                                                                keep_relaxation=kept is not None)
                if relaxation is not None:
                    improved = bound > torch.cat([low_new[:, part], -up_new[:, part]], dim=1)
                    kept.append(IntermediateSlopes(part, improved, relaxation.slopes))  # type: ignore[union-attr]
            else:
                bound = concretize(*self._backward(start, lam0, bias0, pre, values), lower, upper)
            low_new[:, part] = torch.maximum(low_new[:, part], bound[:, :n])
            up_new[:, part] = torch.minimum(up_new[:, part], -bound[:, n:])
        return self._shaped(value, (low_new, up_new))

    def _by_index(self, layers: LayerBounds) -> dict[int, tuple[Tensor, Tensor]]:
        return dict(zip(self.graph.nonlinear, layers.pre_activation))

    # ---- output bounds -------------------------------------------------------------------------
    def output_bounds(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor | None = None,
                      method: Method = "crown", alpha_steps: int = 20, alpha_lr: float = 0.1,
                      layers: LayerBounds | None = None, interval_multipliers: bool | dict[int, Tensor] = False,
                      start: Relaxation | None = None, keep_relaxation: bool = False,
                      record_coefficients: bool = False) -> OutputBound:
        """Lower bounds of ``C·f(x) + d`` on each box; ``C`` is [m, n_out] or [B, m, n_out].

        ``interval_multipliers`` (α-CROWN only): also optimise multipliers β >= 0 on every
        non-linear node's input bounds (see `_backward`): then the result bounds ``C·f(x) + d`` on
        the points of the box where ``layers`` hold, which is all of it unless they were narrowed
        (as branch and bound narrows them: a ReLU split is a bound at zero, and its multiplier is
        β-CROWN's). A dict of masks per node (bool, broadcastable to its [B, m, n, 2] multipliers)
        optimises only those multipliers, the others staying 0: β-CROWN's, on split neurons only,
        converge in fewer steps than all of them. ``start``: α-CROWN's parameters to start from (a
        parent domain's), instead of CROWN's slopes and zero multipliers; ``keep_relaxation``
        returns the best ones. With method "crown", ``start``'s parameters replace CROWN's slopes
        and zero multipliers in its one pass (any slope in [0, 1] and any β >= 0 are sound);
        ``record_coefficients`` returns the λ at every non-linear node's output for the starting
        parameters (``start``'s, else CROWN's: the first pass).
        """
        batch = lower.shape[0]
        C = C.to(lower.dtype).expand(batch, -1, -1) if C.dim() == 2 else C.to(lower.dtype)
        d = torch.zeros(C.shape[:2], dtype=lower.dtype, device=lower.device) if d is None else d.to(lower.dtype).expand(C.shape[:2])
        if layers is None:
            layers = self.layer_bounds(lower, upper, "ibp" if method == "ibp" else "crown")
        pre = self._by_index(layers)
        values = self._intervals(lower, upper, pre)
        out_lower, out_upper = _flat(values[self.graph.output])
        interval = concretize(C, d, out_lower, out_upper)
        if method == "ibp" or not self.graph.nodes:
            return OutputBound(interval, None, None, layers)
        lam0 = C.reshape((batch, C.shape[1]) + self.graph.shapes[self.graph.output])
        record: dict[int, Tensor] | None = {} if record_coefficients else None
        fixed = start if method == "crown" and start is not None else None
        lam, bias = self._backward(self.graph.output, lam0, d, pre, values,
                                   alphas=None if fixed is None else {i: a.to(lam0.dtype) for i, a in fixed.slopes.items()},
                                   multipliers=None if fixed is None else
                                   {i: m.to(lam0.dtype) for i, m in fixed.multipliers.items()}, record=record)
        # CROWN's adaptive slopes can lose to plain intervals (e.g. relu on [-1, 2]); keep the better.
        best = torch.maximum(concretize(lam, bias, lower, upper), interval)
        if method != "alpha-crown" or alpha_steps <= 0:
            return OutputBound(best, lam, bias, layers, node_coefficients=record)
        with torch.enable_grad():  # callers may bound under no_grad; the slopes need gradients
            best, lam, bias, kept = self._optimise_slopes(self.graph.output, lower, upper, lam0, d, pre, values,
                                                          (best, lam, bias), alpha_steps, alpha_lr,
                                                          interval_multipliers, start, keep_relaxation, record)
        return OutputBound(best, lam, bias, layers, kept, node_coefficients=record)

    def _optimise_slopes(self, start_value: str, lower: Tensor, upper: Tensor, lam0: Tensor, bias0: Tensor,
                         pre: dict[int, tuple[Tensor, Tensor]], values: Intervals,
                         start: tuple[Tensor, Tensor | None, Tensor | None], steps: int, lr: float,
                         interval_multipliers: bool | dict[int, Tensor] = False, initial: Relaxation | None = None,
                         keep_relaxation: bool = False, record: dict[int, Tensor] | None = None,
                         ) -> tuple[Tensor, Tensor, Tensor, Relaxation | None]:
        """α-CROWN: Adam on the slopes of the activations behind ``start_value`` (one set per row of
        ``lam0``; ReLU lower slopes, S-shaped lower and upper slopes) for the bounds of
        ``lam0·v + bias0``; with ``interval_multipliers`` also on β (see `_backward`).

        Any ReLU slope in [0, 1], any S-shaped slope and any β >= 0 give a sound bound, so every
        iterate is sound; per (box, row) the best bound seen is kept with its linear function (and,
        with ``keep_relaxation``, its parameters), starting from ``start`` (bound, λ, bias; λ and
        bias may be None when the bound is -inf) and from the parameters ``initial``; ``record`` gets
        the λ of the first step (see `_backward`).
        """
        graph = self.graph
        batch, rows = lam0.shape[:2]
        behind = [i for i in graph.nonlinear if i in graph.ancestors(start_value)]
        alphas = {}
        for i in behind:
            op = graph.nodes[i].op
            if isinstance(op, (BoundRelu, BoundSShaped)):
                given = initial.slopes.get(i) if initial is not None else None
                first = op.default_alpha(*pre[i]).unsqueeze(1) if given is None else given.to(lam0.dtype)
                alphas[i] = first.expand(batch, rows, *first.shape[2:]).clone().requires_grad_(True)
        masks = ({i: m.to(lam0.dtype) for i, m in interval_multipliers.items()}
                 if isinstance(interval_multipliers, dict) else None)
        multipliers = {}
        for i in behind if interval_multipliers else ():
            if masks is not None and i not in masks:
                continue
            given = initial.multipliers.get(i) if initial is not None else None
            first = lam0.new_zeros(batch, rows, pre[i][0].shape[-1], 2) if given is None else given.to(lam0.dtype)
            first = first.expand(batch, rows, *first.shape[2:])
            multipliers[i] = (first if masks is None else first * masks[i]).clone().requires_grad_(True)
        best = start[0].detach().clone()
        best_lam = None if start[1] is None else start[1].detach().clone()
        best_bias = None if start[2] is None else start[2].detach().clone()
        kept = Relaxation({i: a.detach().clone() for i, a in alphas.items()},
                          {i: b.detach().clone() for i, b in multipliers.items()}) if keep_relaxation else None
        optimiser = Adam([(list(alphas.values()), lr), (list(multipliers.values()), lr / 2)])
        for step in range(steps if alphas or multipliers else 0):
            if self.stop():
                break
            lam, bias = self._backward(start_value, lam0, bias0, pre, values, alphas, multipliers,
                                       record if step == 0 else None)
            bound = concretize(lam, bias, lower, upper)
            with torch.no_grad():
                better = bound > best
                best = torch.where(better, bound, best)
                best_lam = lam.detach() if best_lam is None else torch.where(better.unsqueeze(-1), lam, best_lam)
                best_bias = bias.detach() if best_bias is None else torch.where(better, bias, best_bias)
                if kept is not None:
                    for params, found in ((alphas, kept.slopes), (multipliers, kept.multipliers)):
                        for i, value in params.items():
                            mask = better.reshape(better.shape + (1,) * (value.dim() - 2))
                            found[i] = torch.where(mask, value, found[i])
            if step == steps - 1:  # a last update would never be evaluated
                break
            optimiser.zero_grad()
            (-bound.sum()).backward()
            optimiser.step()
            with torch.no_grad():
                for alpha in alphas.values():
                    alpha.clamp_(0.0, 1.0)
                for i, multiplier in multipliers.items():
                    multiplier.clamp_(min=0.0)
                    if masks is not None:
                        multiplier.mul_(masks[i])
        if best_lam is None or best_bias is None:  # no step was taken
            lam, bias = self._backward(start_value, lam0, bias0, pre, values)
            return torch.maximum(best, concretize(lam, bias, lower, upper)).detach(), lam.detach(), bias.detach(), kept
        return best.detach(), best_lam.detach(), best_bias.detach(), kept
