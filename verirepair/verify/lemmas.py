"""Bounds of the ReLU inputs on a region's box, beyond CROWN's, that a certified ReLU split starts from.

A ReLU-split certificate's leaves are re-checked from bounds that the checker derives itself
(CROWN from the box, with each leaf's splits). The verifier's stronger root bounds — α-CROWN's
optimised intermediate bounds, and bounds a MILP solver proved (`milp_refine`) — are recorded as
*lemmas* of the region, each a bound of one neuron's input on the whole box:

* a **slope lemma** ``[layer, neuron, side, alphas]``: the bound is one back-substitution of the
  neuron's input through the layers before it with these ReLU lower slopes (one per neuron of
  ``slope_neurons`` of those layers, in order); the checker re-derives it, so it is checked;
* a **solver lemma** ``[layer, neuron, side, value, solver]``: the solver proved the bound
  ``value``; the checker takes it on trust and lists it.

``side`` is 0 for a lower bound, 1 for an upper bound; layers are counted over the ReLU layers.
Any slope in [0, 1] gives a valid bound, so a slope lemma can only be as tight as the checker's
own arithmetic makes it, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bounds import BoundGraph, LayerBounds
from ..bounds.engine import IntermediateSlopes
from .milp_refine import SolvedBound


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
        """``{"slope_neurons", "lemmas"}`` for the root bounds ``layers`` (the final ones: the slopes
        kept are those of the neurons they leave unstable, the only ones whose slopes matter)."""
        unstable = [((l[0] < 0) & (u[0] > 0)).nonzero().flatten().cpu().numpy() for l, u in layers.pre_activation]
        checked: dict[tuple[int, int, int], list] = {}
        for node, records in self.kept.items():
            layer = self.graph.nonlinear.index(node)
            for record in records:
                n = int(record.neurons.numel())
                alphas = np.concatenate([np.zeros((2 * n, 0))] + [
                    record.slopes[i][0].cpu().numpy()[:, unstable[k]] for k, i in enumerate(self.graph.nonlinear[:layer])],
                    axis=1)
                for row in record.improved[0].nonzero().flatten().tolist():
                    neuron, side = int(record.neurons[row % n]), int(row >= n)
                    checked[(layer, neuron, side)] = [layer, neuron, side, [float(a) for a in alphas[row]]]
        trusted = {(s.layer, s.neuron, int(s.upper)): [s.layer, s.neuron, int(s.upper), s.value, s.solver]
                   for s in self.solved}
        return {"slope_neurons": [[int(n) for n in u] for u in unstable],
                "lemmas": list(checked.values()) + list(trusted.values())}

    @property
    def trusted(self) -> int:
        """Bounds that rest on a solver."""
        return len({(s.layer, s.neuron, s.upper) for s in self.solved})
