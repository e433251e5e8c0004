"""Independent re-check of a proof certificate.

Everything the verifier computed is recomputed here with a separate, plain numpy implementation
of interval and back-substitution (CROWN-style) bounds for ReLU networks, from the ONNX file's
weights (whose import is first compared with onnxruntime). The certificate is accepted only if

* it names the same files (SHA-256 of the ONNX and VNN-LIB bytes),
* every recorded closing holds: on the node's box, the recorded convex combination of the
  clause's rows has a positive lower bound, and
* for every clause of every region, the nodes closing it cover the region's input box (the
  split tree is complete: each split node has both halves, each covered).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bounds import AffineLayer, lower_network
from ..network import check_import_agrees, load_network
from ..spec import Region, parse_vnnlib
from .certificate import RegionCertificate, file_sha256, parse_path, read_certificate

# A recorded hidden-layer bound is confirmed when it contains this checker's own derivation (from
# the box and the confirmed layers before it) up to this relative tolerance. Both derivations
# are the same float64 computation in different code, so they differ by rounding (~1e-13); a
# wrong bound (a bug, a tampered file) is off by far more. This makes the check a re-computation
# to within 1e-9, not an outward-rounded interval proof.
CLAIM_TOLERANCE = 1e-9
# A closing is accepted when its recomputed bound exceeds this. It is below the verifier's own
# decision margin (1e-9), so rounding differences between the two float64 implementations do not
# reject a valid certificate, and far above the float64 rounding of these bound computations.
CHECK_MARGIN = 1e-10
CHUNK = 512  # nodes bounded at once

Layers = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    closings_checked: int


def check_certificate(onnx_path: str | Path, vnnlib_path: str | Path, certificate_path: str | Path) -> CheckResult:
    """Re-check the certificate at ``certificate_path`` for the network and property files (the
    order of every verirepair function: network, property, then the rest)."""
    certificate = read_certificate(certificate_path)
    if certificate.onnx_sha256 != file_sha256(onnx_path) or certificate.vnnlib_sha256 != file_sha256(vnnlib_path):
        return CheckResult(False, "the certificate was made for other files (SHA-256 differs)", 0)
    network = load_network(onnx_path)
    spec = parse_vnnlib(vnnlib_path, n_inputs=network.n_inputs, n_outputs=network.n_outputs)
    if len(certificate.regions) != len(spec.regions):
        return CheckResult(False, f"{len(certificate.regions)} region proofs for {len(spec.regions)} regions", 0)
    chain = lower_network(network)
    if not chain.is_relu_mlp:
        return CheckResult(False, "the checker supports ReLU networks only", 0)
    layers = [(l.weight.numpy(), l.bias.numpy()) for l in chain.layers if isinstance(l, AffineLayer)]
    checked = 0
    for index, (region, proof) in enumerate(zip(spec.regions, certificate.regions)):
        check_import_agrees(network, region.box.lower, region.box.upper)
        problem = _check_region(layers, region, proof)
        if problem:
            return CheckResult(False, f"region {index}: {problem}", checked)
        checked += len(proof.closings)
    return CheckResult(True, f"all {checked} closings re-checked; every clause's closings cover its box", checked)


def _check_region(layers: Layers, region: Region, proof: RegionCertificate) -> str | None:
    try:
        steps = {c.path: parse_path(c.path) for c in proof.closings}
    except ValueError as error:
        return str(error)
    split_dim = _split_dimensions(steps.values())
    if isinstance(split_dim, str):
        return split_dim
    rows_A = [clause.A for clause in region.clauses]
    rows_b = [clause.b for clause in region.clauses]
    if not all(A.shape[0] for A in rows_A):
        return "a clause without output constraints cannot be closed"
    A, b = np.vstack(rows_A), np.concatenate(rows_b)
    owner = np.concatenate([[k] * A_k.shape[0] for k, A_k in enumerate(rows_A)])
    for k in range(len(region.clauses)):
        closing_paths = {c.path for c in proof.closings if k in c.clauses}
        if not _covers("", closing_paths, split_dim, depth=0):
            return f"the closings of clause {k} do not cover the box"
    for first in range(0, len(proof.closings), CHUNK):
        chunk = proof.closings[first:first + CHUNK]
        boxes = [_box_of(region, steps[c.path]) for c in chunk]
        lower, upper = np.stack([l for l, _ in boxes]), np.stack([u for _, u in boxes])
        recorded = _recorded_bounds(chunk, layers)
        if isinstance(recorded, str):
            return recorded
        row_bounds, coefficients, constants = _row_bounds(layers, lower, upper, A, -b, recorded)
        if isinstance(row_bounds, str):
            return row_bounds
        for node, closing in enumerate(chunk):
            for clause, weights in zip(closing.clauses, closing.weights):
                problem = _check_closing(node, clause, np.asarray(weights), owner, row_bounds, coefficients,
                                         constants, lower, upper)
                if problem:
                    return f"node {closing.path or '(root)'}: {problem}"
    return None


def _split_dimensions(all_steps) -> dict[str, int] | str:  # type: ignore[no-untyped-def]
    """The dimension each internal node was split along; inconsistent paths are an error."""
    dims: dict[str, int] = {}
    for steps in all_steps:
        prefix = ""
        for dim, upper_half in steps:
            if dims.setdefault(prefix, dim) != dim:
                return f"node {prefix or '(root)'} is split along two dimensions"
            prefix += f"{dim}{'R' if upper_half else 'L'}"
    return dims


def _covers(path: str, closing_paths: set[str], split_dim: dict[str, int], depth: int) -> bool:
    if path in closing_paths:
        return True
    if path not in split_dim or depth > 200:
        return False
    dim = split_dim[path]
    return all(_covers(f"{path}{dim}{side}", closing_paths, split_dim, depth + 1) for side in "LR")


def _box_of(region: Region, steps: list[tuple[int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = region.box.lower.copy(), region.box.upper.copy()
    for dim, upper_half in steps:
        middle = (lower[dim] + upper[dim]) / 2
        if upper_half:
            lower[dim] = middle
        else:
            upper[dim] = middle
    return lower, upper


def _check_closing(node: int, clause: int, weights: np.ndarray, owner: np.ndarray, row_bounds: np.ndarray,
                   coefficients: np.ndarray, constants: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> str | None:
    if weights.shape != owner.shape or np.any(weights < 0) or np.any(weights[owner != clause] != 0):
        return f"clause {clause}: weights must be non-negative and on the clause's own rows"
    if weights.sum() <= 0:
        return f"clause {clause}: all weights are zero"
    if np.count_nonzero(weights) == 1:
        value = row_bounds[node, int(np.argmax(weights))]
    else:
        mixed = weights @ coefficients[node]
        center, radius = (upper[node] + lower[node]) / 2, (upper[node] - lower[node]) / 2
        value = (weights @ constants[node] + mixed @ center - np.abs(mixed) @ radius) / weights.sum()
    if not value > CHECK_MARGIN:
        return f"clause {clause}: recomputed lower bound {value:.3g} is not positive"
    return None


def _interval(W: np.ndarray, b: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    mid, spread = center @ W.T + b, radius @ np.abs(W).T
    return mid - spread, mid + spread


def _relu_lines(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower slope, upper slope, upper intercept) of the triangle relaxation, adaptive lower slope."""
    unstable = (lower < 0) & (upper > 0)
    width = np.where(unstable, upper - lower, 1.0)
    up_slope = np.where(unstable, upper / width, (lower >= 0).astype(float))
    up_intercept = np.where(unstable, -upper * lower / width, 0.0)
    low_slope = np.where(unstable, (upper > -lower).astype(float), (lower >= 0).astype(float))
    return low_slope, up_slope, up_intercept


def _back_substitute(layers: Layers, relus: list[tuple[np.ndarray, np.ndarray]], last: int,
                     lam: np.ndarray, bias: np.ndarray, lower: np.ndarray, upper: np.ndarray):  # type: ignore[no-untyped-def]
    """Lower-bound ``lam·h_last + bias`` (h_k = relu(z_k), h_0 = x) by a linear function of the
    input; returns (coefficients, constant, its minimum over the box)."""
    for k in range(last, 0, -1):
        low_slope, up_slope, up_intercept = _relu_lines(*relus[k - 1])
        positive, negative = np.maximum(lam, 0), np.minimum(lam, 0)
        bias = bias + np.einsum("bmn,bn->bm", negative, up_intercept)
        lam = positive * low_slope[:, None, :] + negative * up_slope[:, None, :]
        W, b = layers[k - 1]
        bias = bias + lam @ b
        lam = lam @ W
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    minimum = np.einsum("bmn,bn->bm", lam, center) - np.einsum("bmn,bn->bm", np.abs(lam), radius) + bias
    return lam, bias, minimum


def _recorded_bounds(chunk, layers: Layers) -> list[tuple[np.ndarray, np.ndarray]] | str:  # type: ignore[no-untyped-def]
    sizes = [W.shape[0] for W, _ in layers[:-1]]
    try:
        recorded = [(np.array([c.bounds[k][0] for c in chunk]), np.array([c.bounds[k][1] for c in chunk]))
                    for k in range(len(sizes))]
    except (IndexError, ValueError):
        return "recorded layer bounds are missing or malformed"
    if any(c.bounds and len(c.bounds) != len(sizes) for c in chunk) or any(
            l.shape != (len(chunk), n) for (l, _), n in zip(recorded, sizes)):
        return "recorded layer bounds do not match the network's layer sizes"
    return recorded


def _row_bounds(layers: Layers, lower: np.ndarray, upper: np.ndarray, C: np.ndarray, d: np.ndarray,
                recorded: list[tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    """Lower bounds (best of CROWN and IBP) of ``C·f(x) + d`` per box, with CROWN's linear functions.

    The relaxations use the ``recorded`` hidden-layer bounds, each confirmed first: it must
    contain the bound this checker derives from the box and the (already confirmed) bounds of
    the layers before it, up to `CLAIM_TOLERANCE`; the looser of the two is then used. Returns an
    error message instead when one is not confirmed.
    """
    batch, hidden = lower.shape[0], len(layers) - 1
    relus: list[tuple[np.ndarray, np.ndarray]] = []  # confirmed bounds of z_1 .. z_hidden
    l, u = _interval(*layers[0], lower, upper)  # z_1 = W_0 x + b_0, exact
    for k in range(1, hidden + 1):
        claimed_l, claimed_u = recorded[k - 1]
        slack = CLAIM_TOLERANCE * (1 + np.abs(l))
        if np.any(claimed_l > l + slack) or np.any(claimed_u < u - CLAIM_TOLERANCE * (1 + np.abs(u))):
            return f"recorded bounds of hidden layer {k} are not implied by the layers before it", None, None
        # the looser of the recorded and the derived bound: the tolerance above accepts a recorded
        # bound slightly tighter than this checker's own, which must not be used as if proven
        l, u = np.minimum(claimed_l, l), np.maximum(claimed_u, u)
        relus.append((l, u))
        W, b = layers[k]  # z_{k+1} = W_k relu(z_k) + b_k (the output when k == hidden)
        l, u = _interval(W, b, np.maximum(l, 0), np.maximum(u, 0))
        if k < hidden:
            lam = np.broadcast_to(np.concatenate([W, -W]), (batch, 2 * W.shape[0], W.shape[1])).copy()
            offset = np.broadcast_to(np.concatenate([b, -b]), (batch, 2 * W.shape[0])).copy()
            _, _, bound = _back_substitute(layers, relus, k, lam, offset, lower, upper)
            n = W.shape[0]
            l, u = np.maximum(l, bound[:, :n]), np.minimum(u, -bound[:, n:])
    W, b = layers[-1]
    lam = np.broadcast_to(C @ W, (batch, C.shape[0], W.shape[1])).copy()
    offset = np.broadcast_to(C @ b + d, (batch, C.shape[0])).copy()
    coefficients, constants, crown = _back_substitute(layers, relus, hidden, lam, offset, lower, upper)
    center, radius = (u + l) / 2, (u - l) / 2  # interval bounds of the output
    ibp = center @ C.T - radius @ np.abs(C).T + d
    return np.maximum(crown, ibp), coefficients, constants

