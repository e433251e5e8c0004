"""The bounds of every activation input on a region's box that its ReLU-split or activation-split leaves start from.

They are this checker's own (`bounds.layer_bounds`: intervals tightened by back-substitution),
tightened by the certificate's lemmas, layer by layer from the first:

* a slope lemma is re-derived here: the neuron's input (its row of the affine step, negated for
  an upper bound) back-substituted to the box with the lemma's slopes, over the bounds of the
  layers before it as this module has them. A ReLU's lower slope is clipped to [0, 1] (CROWN's
  adaptive slope for neurons it gives none); a sigmoid's or tanh's two slopes are clipped to
  [0, its largest derivative], and each line's offset is computed for its slope by
  `sshaped.offsets` over the neuron's interval as derived here, so the line bounds the function
  there whatever the slope was (the checker's own relaxation for neurons it gives none). Any
  slopes give a valid bound, so a lemma can make the bound only as tight as this arithmetic
  proves it;
* a solver lemma's bound is taken as it is, and listed as trusted.

Every bound used is therefore one this checker derived, or one it lists as resting on a solver.
"""

from __future__ import annotations

import numpy as np

from . import sshaped
from .bounds import LinearBound, NodeBounds, layer_bounds, to_input
from .certificate_file import Lemmas, SlopeLemma, SolverLemma
from .onnx_reader import DenseNetwork
from .vnnlib_reader import Region


class BadLemma(Exception):
    """A lemma that does not fit the network (the message says why)."""


Bounds = list[tuple[np.ndarray, np.ndarray]]


def root_bounds(network: DenseNetwork, region: Region, lemmas: Lemmas) -> tuple[Bounds, list[str]]:
    """Per activation layer, [1, n] lower and upper bounds of its input on the region's box
    (crossing where the trusted lemmas leave no point), and the solver lemmas, described."""
    sizes = network.activation_sizes
    _check_fit(lemmas, network)
    solver = [lemma for lemma in lemmas.entries if isinstance(lemma, SolverLemma)]
    trusted = [f"layer {lemma.layer} neuron {lemma.neuron} {'upper' if lemma.upper else 'lower'} bound "
               f"{lemma.value!r}: {lemma.solver}" for lemma in solver]
    by_layer: dict[int, list[SlopeLemma]] = {}
    for lemma in lemmas.entries:
        if isinstance(lemma, SlopeLemma):
            by_layer.setdefault(lemma.layer, []).append(lemma)

    def tighten(layer: int, bounds: NodeBounds, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        group = by_layer.get(layer)
        if not group:
            return low, high
        tightened = (low.copy(), high.copy())
        _tighten(tightened, np.array([l.neuron for l in group]), np.array([l.upper for l in group]),
                 _slope_bounds(network, bounds, layer, group, lemmas.slope_neurons))
        return tightened

    # The verifier's slope lemmas come from passes between which a solver tightened one layer more
    # (`milp_refined_layers`), and back-substitution is not monotone in the bounds it runs over:
    # the passes are replayed, each over the bounds of the one before, a solver's layer added.
    activated = [k for k, step in enumerate(network.steps) if step.activation is not None]
    limits: Bounds = [(np.full((1, n), -np.inf), np.full((1, n), np.inf)) for n in sizes]
    stages = sorted({lemma.layer for lemma in solver})
    for stage in [-1, *stages]:
        for lemma in solver:
            if lemma.layer == stage:
                _tighten(limits[lemma.layer], np.array([lemma.neuron]), np.array([lemma.upper]), np.array([lemma.value]))
        passed = layer_bounds(network, region.lower[None, :], region.upper[None, :], _unrecorded(sizes), limits, tighten)
        limits = [passed.pre_activation[k] for k in activated]
    return limits, trusted


def _check_fit(lemmas: Lemmas, network: DenseNetwork) -> None:
    sizes = network.activation_sizes
    if len(lemmas.slope_neurons) > len(sizes) or any(
            n >= size for layer, size in zip(lemmas.slope_neurons, sizes) for n in layer):
        raise BadLemma("a slope neuron is not in the network")
    if any(len(set(layer)) != len(layer) for layer in lemmas.slope_neurons):
        raise BadLemma("a slope neuron is listed twice")
    per_neuron = _slopes_per_neuron(network)
    for lemma in lemmas.entries:
        if lemma.layer >= len(sizes) or lemma.neuron >= sizes[lemma.layer]:
            raise BadLemma(f"lemma on neuron {lemma.neuron} of activation layer {lemma.layer}, which is not in the "
                           "network")
        if isinstance(lemma, SlopeLemma) and len(lemma.alphas) != sum(
                len(layer) * count for layer, count in zip(lemmas.slope_neurons[:lemma.layer], per_neuron)):
            raise BadLemma(f"lemma on neuron {lemma.neuron} of activation layer {lemma.layer}: not one slope per "
                           "slope neuron of the ReLU layers before it and two per one of the sigmoid and tanh layers")


def _slopes_per_neuron(network: DenseNetwork) -> list[int]:
    """Per activation layer: 1 (a ReLU's lower slope) or 2 (a sigmoid's or tanh's two lines')."""
    return [1 if step.relu else 2 for step in network.steps if step.activation is not None]


def _unrecorded(sizes: list[int]) -> Bounds:
    return [(np.full((1, n), np.inf), np.full((1, n), -np.inf)) for n in sizes]


def _tighten(bounds: tuple[np.ndarray, np.ndarray], neurons: np.ndarray, upper: np.ndarray, values: np.ndarray) -> None:
    """Raise lower bounds to ``values`` where not ``upper``, lower upper bounds to them where ``upper``
    (a value that is not a number is no bound)."""
    low, high = bounds
    values = np.where(np.isnan(values), np.where(upper, np.inf, -np.inf), values)
    np.maximum.at(low[0], neurons[~upper], values[~upper])
    np.minimum.at(high[0], neurons[upper], values[upper])


def _slope_bounds(network: DenseNetwork, bounds: NodeBounds, layer: int, group: list[SlopeLemma],
                  slope_neurons: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """[Q]: each lemma's bound (a lower bound of its neuron's input, or an upper one), by
    back-substitution with its slopes over ``bounds`` (one box; those of the steps before the
    layer's)."""
    count = len(group)
    k = [j for j, step in enumerate(network.steps) if step.activation is not None][layer]
    step = network.steps[k]
    sign = np.array([-1.0 if lemma.upper else 1.0 for lemma in group])
    rows = np.array([lemma.neuron for lemma in group])
    objective = LinearBound((sign[:, None] * step.weight[rows])[:, None, :], (sign * step.bias[rows])[:, None],
                            np.zeros((count, 1)))
    alphas = [np.full((count, n, 2), np.nan) for n in network.activation_sizes]
    given = np.array([lemma.alphas for lemma in group]).reshape(count, -1)
    offset = 0
    activations = [step.activation for step in network.steps if step.activation is not None]
    for j, (neurons, width) in enumerate(zip(slope_neurons[:layer], _slopes_per_neuron(network))):
        taken = given[:, offset:offset + width * len(neurons)].reshape(count, len(neurons), width)
        if width == 2:  # lines of an increasing function: no slope beyond [0, its largest derivative] is tighter
            taken = np.clip(taken, 0.0, sshaped.max_derivative(activations[j]))
        alphas[j][:, list(neurons), :width] = taken
        offset += width * len(neurons)

    def batch(array: np.ndarray) -> np.ndarray:
        return np.broadcast_to(array, (count, array.shape[1]))

    batched = NodeBounds(batch(bounds.lower), batch(bounds.upper),
                         [(batch(low), batch(high)) for low, high in bounds.pre_activation[:k]],
                         [batch(m) for m in bounds.input_magnitudes[:k + 1]])
    value = to_input(network, batched, objective, k, alphas).minimum(batched.lower, batched.upper)[:, 0]
    return sign * value
