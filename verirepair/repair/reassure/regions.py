"""Linear regions of a ReLU network: activation pattern → H-representation and local affine map.

On the set of inputs that share an activation pattern, a ReLU network is one affine map. The
network is its own bound graph (`verirepair.bounds.BoundGraph`: linear nodes — dense, convolution,
reshapes, additions of branches — and ReLUs, any DAG): with every ReLU fixed to the 0/1 mask of
the pattern, each value of the graph is an affine map ``J x + c`` of the input, obtained by pushing
the identity through the linear nodes (`LinearOperator.apply`, the node's own operation without its
offsets) and masking at the ReLUs, exactly in float64 (no autograd). The region is

    { x in box :  J_l[i] x + c_l[i] >= 0 for active i,   <= 0 for inactive i }

(``J_l x + c_l`` the input of ReLU node ``l``), which we return as ``A x <= b`` with the box faces
appended. Rows are scaled so that ``b_i - A_i x`` is a distance in *box-normalised* coordinates
(each input divided by the box width), which gives the support network's sharpness a meaning
independent of input units. Redundant rows are removed by one LP each (for inputs of low
dimension, where it is cheap and keeps the patch small).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ...bounds import BoundGraph, BoundRelu, build_graph
from ...errors import UnsupportedError
from ...network import Network
from ...network.nnet import relu_mlp_forward
from .lp import solve_lp

# Rows whose normalised coefficient vector is shorter than this are constant on the whole box
# (a neuron that does not depend on the input): they are dropped, the point satisfies them.
ZERO_ROW = 1e-12
# Redundancy test: a row is dropped when its maximum over the other rows is below b + this
# (in normalised distance units). Dropping a nearly-binding row only enlarges the polytope the
# patch is proven on, so an error here costs locality, never soundness.
REDUNDANCY_TOLERANCE = 1e-9
# Chebyshev-centre LPs with at least this many inputs use the interior-point method: on MNIST
# (784 inputs, about 2,000 dense rows) HiGHS's dual simplex takes about 6 s, interior point with
# crossover 0.7 s for the same optimum. Smaller LPs keep the simplex (and its exact same answers).
INTERIOR_POINT_MIN_INPUTS = 100


@dataclass(frozen=True)
class ReluMlp:
    """A chain of dense layers with ReLU between them, in float64: ``weights[i]`` is [out, in]
    (the patch network, `patch.patch_mlp`)."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def n_hidden_layers(self) -> int:
        return len(self.weights) - 1

    def forward(self, x: np.ndarray) -> np.ndarray:
        return relu_mlp_forward(self.weights, self.biases, x)


class ReluNetwork:
    """A network whose bound graph has only linear nodes and ReLUs, evaluated in float64."""

    def __init__(self, graph: BoundGraph) -> None:
        self.graph = graph
        self.relus = tuple(node for node in graph.nodes if isinstance(node.op, BoundRelu))

    @property
    def n_inputs(self) -> int:
        return self.graph.n_inputs

    @property
    def n_outputs(self) -> int:
        return self.graph.n_outputs

    def forward(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.graph.forward(torch.as_tensor(np.atleast_2d(x), dtype=torch.float64)).numpy()

    def patterns(self, x: np.ndarray) -> np.ndarray:
        """Activation patterns [B, ReLU neurons] (True = strictly positive ReLU input), the ReLU
        nodes in graph order."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if not self.relus:
            return np.zeros((x.shape[0], 0), dtype=bool)
        with torch.no_grad():
            values = self.graph.values(torch.as_tensor(x))
        return np.concatenate([values[node.inputs[0]].flatten(1).numpy() > 0 for node in self.relus], axis=1)


def relu_network_of(network: Network) -> ReluNetwork:
    """The network's bound graph, refused unless it has only linear nodes and ReLUs."""
    graph = build_graph(network)
    if not graph.is_relu_network:
        raise UnsupportedError(network.path, "repair", "REASSURE needs a network of linear nodes and ReLUs only")
    return ReluNetwork(graph)


def pattern_key(pattern: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(np.asarray(pattern, dtype=bool)).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class LinearRegion:
    """``{x : A x <= b}`` (box faces included) on which the network equals ``W x + c``."""

    A: np.ndarray
    b: np.ndarray
    W: np.ndarray
    c: np.ndarray
    pattern: np.ndarray  # bool [hidden neurons]
    lower: np.ndarray  # the box the region was cut to
    upper: np.ndarray

    @property
    def key(self) -> str:
        return pattern_key(self.pattern)

    @cached_property
    def beyond_box(self) -> np.ndarray:
        """Mask of the rows the box alone does not imply (`implied_by_box`, exact test): the region
        is these rows within the box."""
        return ~implied_by_box(self.A, self.b, self.lower, self.upper, tolerance=0.0)

    def contains(self, x: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        x = np.atleast_2d(x)
        return np.all(x @ self.A.T <= self.b + tolerance, axis=1)


def local_affine_map(relu: ReluNetwork, pattern: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Per ReLU node the affine map (M_l, c_l) of its input, and the output map (W, c), on the
    inputs whose activation pattern is ``pattern``."""
    graph = relu.graph
    n = graph.n_inputs
    shape = graph.shapes[graph.input]
    jacobian = {graph.input: torch.eye(n, dtype=torch.float64).reshape((n,) + shape)}
    offset = {graph.input: torch.zeros((1,) + shape, dtype=torch.float64)}
    maps_M, maps_c = [], []
    start = 0
    with torch.no_grad():
        for node in graph.nodes:
            if isinstance(node.op, BoundRelu):
                J, c = jacobian[node.inputs[0]], offset[node.inputs[0]]
                maps_M.append(J.reshape(n, -1).T.numpy())
                maps_c.append(c.reshape(-1).numpy())
                size = maps_c[-1].size
                mask = torch.as_tensor(pattern[start:start + size], dtype=torch.float64).reshape(J.shape[1:])
                start += size
                jacobian[node.output], offset[node.output] = J * mask, c * mask
            else:
                jacobian[node.output] = node.op.apply(*[jacobian[v] for v in node.inputs])
                offset[node.output] = node.op.forward(*[offset[v] for v in node.inputs])
    W = jacobian[graph.output].reshape(n, -1).T.numpy()
    return maps_M, maps_c, W, offset[graph.output].reshape(-1).numpy()


def linear_region_of(relu: ReluNetwork, x: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                     prune: bool | str = True) -> LinearRegion:
    """The linear region of ``relu`` containing ``x``, cut to the box ``[lower, upper]``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    pattern = relu.patterns(x[None, :])[0]
    return region_of_pattern(relu, pattern, lower, upper, prune)


def region_of_pattern(relu: ReluNetwork, pattern: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                      prune: bool | str = True) -> LinearRegion:
    """The region of an activation pattern; ``prune``: True (LP per row), "box" (only rows the
    box alone implies are dropped) or False."""
    maps_M, maps_c, W, c = local_affine_map(relu, pattern)
    M = np.vstack(maps_M) if maps_M else np.zeros((0, relu.n_inputs))
    cc = np.concatenate(maps_c) if maps_c else np.zeros(0)
    sign = np.where(pattern, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
    A = sign[:, None] * M
    b = -sign * cc
    n = relu.n_inputs
    eye = np.eye(n)
    A = np.vstack([A, eye, -eye])
    b = np.concatenate([b, upper, -lower])
    width = np.where(upper > lower, upper - lower, 1.0)
    norms = np.linalg.norm(A * width, axis=1)
    is_face = np.arange(A.shape[0]) >= A.shape[0] - 2 * n
    keep = norms > ZERO_ROW
    A, b, is_face = A[keep] / norms[keep, None], b[keep] / norms[keep], is_face[keep]
    if prune:
        A, b = _without_redundant_rows(A, b, is_face, lower, upper, lp=prune is True)
    return LinearRegion(A, b, W, c, pattern.astype(bool), lower.astype(np.float64), upper.astype(np.float64))


def implied_by_box(A: np.ndarray, b: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   tolerance: float = REDUNDANCY_TOLERANCE) -> np.ndarray:
    """Rows ``A_i x <= b_i`` that hold on the whole box ``[lower, upper]`` (closed form), as a mask."""
    box_max = np.where(A > 0, A * upper, A * lower).sum(axis=1)
    return box_max <= b + tolerance


def _without_redundant_rows(A: np.ndarray, b: np.ndarray, is_face: np.ndarray, lower: np.ndarray,
                            upper: np.ndarray, lp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    # First the neuron rows already implied by the box alone (closed form), then one LP per
    # remaining row over all the others (box faces are rows too, so they can be dropped as well).
    keep = is_face | ~implied_by_box(A, b, lower, upper)
    A, b = A[keep], b[keep]
    # Duplicate rows (the same hyperplane from two neurons) collapse to the tightest one.
    order = np.lexsort((b,) + tuple(np.round(A, 12).T))
    A, b = A[order], b[order]
    rounded = np.round(A, 12)
    first = np.ones(len(b), dtype=bool)
    first[1:] = np.any(rounded[1:] != rounded[:-1], axis=1)
    A, b = A[first], b[first]
    if not lp:
        return A, b
    active = np.ones(len(b), dtype=bool)
    for i in range(len(b)):
        others = active.copy()
        others[i] = False
        result = solve_lp(-A[i], A[others], b[others])
        if result.status == "optimal" and -result.objective <= b[i] + REDUNDANCY_TOLERANCE:
            active[i] = False
    return A[active], b[active]


def chebyshev_centre(region: LinearRegion) -> tuple[np.ndarray, float]:
    """Centre and radius (normalised units) of the largest ball inside the region (rows are unit)."""
    n = region.A.shape[1]
    width = np.where(region.upper > region.lower, region.upper - region.lower, 1.0)
    norms = np.linalg.norm(region.A * width, axis=1)
    c = np.zeros(n + 1)
    c[-1] = -1.0
    A_ub = np.hstack([region.A, norms[:, None]])
    result = solve_lp(c, A_ub, region.b, bounds=[(None, None)] * n + [(0, None)],
                      interior_point=n >= INTERIOR_POINT_MIN_INPUTS)
    if result.status != "optimal" or result.x is None:
        return np.zeros(n), 0.0
    return result.x[:n], float(result.x[-1])
