"""Linear regions of a ReLU network: activation pattern → H-representation and local affine map.

On the set of inputs that share an activation pattern, a ReLU network is one affine map. Writing
``D_l`` for the 0/1 diagonal mask of layer ``l``, the pre-activation of layer ``l`` is the affine map
``M_l x + c_l`` with ``M_0 = W_0``, ``M_l = W_l D_l M_{l-1}``, ``c_l = W_l D_l c_{l-1} + b_l``: masked
weight products, computed exactly in float64 (no autograd). The region is

    { x in box :  M_l[i] x + c_l[i] >= 0 for active i,   <= 0 for inactive i }

which we return as ``A x <= b`` with the box faces appended. Rows are scaled so that
``b_i - A_i x`` is a distance in *box-normalised* coordinates (each input divided by the box
width), which gives the support network's sharpness a meaning independent of input units.
Redundant rows are removed by one LP each (for inputs of low dimension, where it is cheap and
keeps the patch small).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ...bounds import BoundRelu, build_graph
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
    """A chain of dense layers with ReLU between them, in float64: ``weights[i]`` is [out, in]."""

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

    def patterns(self, x: np.ndarray) -> np.ndarray:
        """Activation patterns [B, hidden neurons] (True = strictly positive pre-activation)."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        masks = []
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            z = h @ w.T + b
            masks.append(z > 0)
            h = np.maximum(z, 0.0)
        return np.concatenate(masks, axis=1) if masks else np.zeros((h.shape[0], 0), dtype=bool)


def relu_mlp_of(network: Network) -> ReluMlp:
    """The network as a `ReluMlp`: its bound graph must be a chain of linear nodes (dense,
    convolution, reshapes, normalisation, ...) and ReLUs; the linear nodes between two ReLUs are
    composed into one exact dense map (`LinearOperator.matrices`, float64). Other graphs refused."""
    graph = build_graph(network)
    previous = graph.input
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    weight, bias = np.eye(graph.n_inputs), np.zeros(graph.n_inputs)
    for node in graph.nodes:
        if node.inputs != (previous,) or not (node.is_linear or isinstance(node.op, BoundRelu)):
            raise UnsupportedError(network.path, "repair", "REASSURE needs a chain of linear layers and ReLUs "
                                   f"(node {node.name} is {'a branch' if node.inputs != (previous,) else 'not one'})")
        previous = node.output
        if isinstance(node.op, BoundRelu):
            weights.append(weight)
            biases.append(bias)
            weight, bias = np.eye(len(bias)), np.zeros(len(bias))
            continue
        (matrix,) = node.op.matrices()
        matrix = matrix.detach().to(torch.float64).cpu().numpy()
        offset = node.op.bias.detach().to(torch.float64).cpu().numpy().reshape(-1) if node.op.has_bias else 0.0
        weight, bias = matrix @ weight, matrix @ bias + offset
    weights.append(weight)
    biases.append(bias)
    return ReluMlp(tuple(weights), tuple(biases))


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

    def contains(self, x: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        x = np.atleast_2d(x)
        return np.all(x @ self.A.T <= self.b + tolerance, axis=1)


def local_affine_map(mlp: ReluMlp, pattern: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Per hidden layer the pre-activation maps (M_l, c_l), and the output map (W, c)."""
    M, c = mlp.weights[0].copy(), mlp.biases[0].copy()
    maps_M, maps_c = [], []
    offset = 0
    for w, b in zip(mlp.weights[1:], mlp.biases[1:]):
        maps_M.append(M)
        maps_c.append(c)
        mask = pattern[offset:offset + M.shape[0]].astype(np.float64)
        offset += M.shape[0]
        M, c = w @ (mask[:, None] * M), w @ (mask * c) + b
    return maps_M, maps_c, M, c


def linear_region_of(mlp: ReluMlp, x: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                     prune: bool | str = True) -> LinearRegion:
    """The linear region of ``mlp`` containing ``x``, cut to the box ``[lower, upper]``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    pattern = mlp.patterns(x[None, :])[0]
    return region_of_pattern(mlp, pattern, lower, upper, prune)


def region_of_pattern(mlp: ReluMlp, pattern: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                      prune: bool | str = True) -> LinearRegion:
    """The region of an activation pattern; ``prune``: True (LP per row), "box" (only rows the
    box alone implies are dropped) or False."""
    maps_M, maps_c, W, c = local_affine_map(mlp, pattern)
    M = np.vstack(maps_M) if maps_M else np.zeros((0, mlp.n_inputs))
    cc = np.concatenate(maps_c) if maps_c else np.zeros(0)
    sign = np.where(pattern, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
    A = sign[:, None] * M
    b = -sign * cc
    n = mlp.n_inputs
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
