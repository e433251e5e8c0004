"""Bounds of the activation inputs on a region's box, beyond CROWN's, that a certified neuron split starts from.

A ReLU-split or activation-split certificate's leaves are re-checked from bounds that the checker
derives itself (CROWN from the box, with each leaf's splits). The verifier's stronger root bounds —
α-CROWN's optimised intermediate bounds, and bounds a MILP solver proved (`milp_refine`) — are
recorded as *lemmas* of the region, each a bound of one neuron's input on the whole box:

* a **slope lemma** ``[layer, neuron, side, slopes]``: the bound is one back-substitution of the
  neuron's input through the layers before it with these slopes: per neuron of ``slope_neurons``
  of those layers, in order, one for a ReLU (its lower slope) and two for a sigmoid or tanh (the
  slopes of its lower and upper line); the checker re-derives it, so it is checked;
* a **solver lemma** ``[layer, neuron, side, value, solver]``: the solver proved the bound
  ``value``; the checker takes it on trust and lists it.

``side`` is 0 for a lower bound, 1 for an upper bound; layers are counted over the activation
layers. Any ReLU slope in [0, 1] gives a valid bound, and so does any sigmoid/tanh slope (the
checker computes each line's offset for its slope), so a slope lemma can only be as tight as the
checker's own arithmetic makes it, never wrong. Sigmoid/tanh slopes are written to
`SSHAPED_SLOPE_DIGITS` decimals: that keeps the file compact, and a rounded slope is as valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bounds import BoundGraph, BoundSShaped, LayerBounds
from ..bounds.engine import IntermediateSlopes
from .milp_refine import SolvedBound

# Sigmoid/tanh slopes are at most 1; 5 decimals move a line's offset by at most 5e-6 per unit of
# its interval's width, far below what α-CROWN's optimisation gains, in a third fewer characters
# than full precision.
SSHAPED_SLOPE_DIGITS = 5
# A sigmoid/tanh neuron whose values over its interval span less than this is no slope neuron:
# every pair of lines between its extreme values is within this of the function, so the checker's
# own relaxation, made for the interval it derives, is as good as optimised slopes (saturated
# neurons are common: on eran's sigmoid net a third of them), and each lemma is shorter.
SSHAPED_MIN_RANGE = 1e-4


@dataclass
class RootLemmas:
    """The lemmas of one region, collected while its root bounds are computed: ``kept`` fills as
    `BoundEngine.layer_bounds`'s ``kept_slopes``, ``solved`` as `milp_refined_layers`'s. A later
    record of the same bound replaces an earlier one (each pass starts from the bounds before it,
    so a bound it improves is tighter)."""

    graph: BoundGraph
    kept: dict[int, list[IntermediateSlopes]] = field(default_factory=dict)
    solved: list[SolvedBound] = field(default_factory=list)

    def to_json(self, layers: LayerBounds) -> dict[str, list]:
        """``{"slope_neurons", "lemmas"}`` for the root bounds ``layers`` (the final ones). The
        slope neurons are those whose slopes matter under them: a ReLU's where they leave it
        unstable, a sigmoid's or tanh's where its values span at least `SSHAPED_MIN_RANGE`."""
        graph = self.graph
        operators = [graph.nodes[i].op for i in graph.nonlinear]
        sshaped = [isinstance(op, BoundSShaped) for op in operators]
        neurons = [(op.f(u[0]) - op.f(l[0]) >= SSHAPED_MIN_RANGE if isinstance(op, BoundSShaped)
                    else (l[0] < 0) & (u[0] > 0)).nonzero().flatten().cpu().numpy()
                   for (l, u), op in zip(layers.pre_activation, operators)]
        checked: dict[tuple[int, int, int], list] = {}
        for node, records in self.kept.items():
            layer = graph.nonlinear.index(node)
            for record in records:
                n = int(record.neurons.numel())
                columns = [np.zeros((2 * n, 0))]
                for k, i in enumerate(graph.nonlinear[:layer]):
                    slopes = record.slopes[i][0].cpu().numpy()[:, neurons[k]]
                    if sshaped[k]:  # in units of the largest derivative: per neuron its lower and upper line's
                        scale = operators[k].max_derivative  # type: ignore[union-attr]
                        slopes = np.round(slopes.reshape(2 * n, -1) * scale, SSHAPED_SLOPE_DIGITS)
                    columns.append(slopes)
                slopes_of = np.concatenate(columns, axis=1)
                for row in record.improved[0].nonzero().flatten().tolist():
                    neuron, side = int(record.neurons[row % n]), int(row >= n)
                    checked[(layer, neuron, side)] = [layer, neuron, side, [float(a) for a in slopes_of[row]]]
        trusted = {(s.layer, s.neuron, int(s.upper)): [s.layer, s.neuron, int(s.upper), s.value, s.solver]
                   for s in self.solved}
        return {"slope_neurons": [[int(n) for n in u] for u in neurons],
                "lemmas": list(checked.values()) + list(trusted.values())}

    @property
    def trusted(self) -> int:
        """Bounds that rest on a solver."""
        return len({(s.layer, s.neuron, s.upper) for s in self.solved})
