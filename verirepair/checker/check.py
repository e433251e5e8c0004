"""Re-check a proof certificate without any of the verifier's code.

The network is read by `onnx_reader`, the property by `vnnlib_reader`, the certificate by
`certificate_file`, and every bound is computed by `bounds` with outward rounding. The
certificate is accepted only if

* it names the same files (SHA-256 of their bytes as given) and has one proof per region;
* on every closing node, for every clause closed there, the recorded weights (non-negative, on
  the clause's own rows, not all zero) combine the clause's rows ``a·y - b`` into a function whose
  rigorous lower bound on the node's box is positive (so no point of the box satisfies all rows:
  the clause is unreachable there). The bound rests on hidden-layer bounds that this checker
  derives itself, each widened to contain the certificate's recorded bound where that is looser;
* for every clause of every region, the nodes closing it cover the region's box: the split tree
  is complete (each split node has both halves, each of them closed or split further).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import decompressed
from .bounds import layer_bounds, mixture_bounds, row_bounds
from .certificate_file import (
    CertificateFile,
    Closing,
    MalformedCertificate,
    parse_certificate,
)
from .onnx_reader import ReluNetwork, UnsupportedNetwork, read_network
from .vnnlib_reader import Property, Region, UnsupportedProperty, read_property

CHUNK = 256  # nodes bounded at once
MAX_DEPTH = 400  # deeper split trees are rejected (a box halved 400 times is below float64 resolution)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    closings_checked: int


class Rejected(Exception):
    """The certificate does not prove the property (the message says why)."""


def check_certificate(onnx_path: str | Path, vnnlib_path: str | Path, certificate_path: str | Path) -> CheckResult:
    """Re-check the certificate at ``certificate_path`` for the network and property files. A file
    that cannot be read is an `InputError`; anything wrong with the certificate, or a network or
    property this checker does not read, is a rejection."""
    certificate_text = _read_text(certificate_path)
    onnx_bytes, vnnlib_bytes = _raw(onnx_path), _raw(vnnlib_path)
    checked = 0
    try:
        certificate = parse_certificate(certificate_text)
        if certificate.onnx_sha256 != _sha256(onnx_bytes) or certificate.vnnlib_sha256 != _sha256(vnnlib_bytes):
            raise Rejected("the certificate was made for other files (SHA-256 differs)")
        network = read_network(decompressed(onnx_bytes, onnx_path), onnx_path)
        prop = read_property(_decoded(decompressed(vnnlib_bytes, vnnlib_path), vnnlib_path))
        _check_sizes(network, prop, certificate)
        for index, (region, closings) in enumerate(zip(prop.regions, certificate.regions)):
            try:
                check_region(network, region, closings)
            except Rejected as rejection:
                raise Rejected(f"region {index}: {rejection}") from None
            checked += len(closings)
    except MalformedCertificate as error:
        return CheckResult(False, f"not a verirepair certificate: {error}", checked)
    except (UnsupportedNetwork, UnsupportedProperty) as error:
        return CheckResult(False, f"the checker cannot read this problem: {error}", checked)
    except Rejected as rejection:
        return CheckResult(False, str(rejection), checked)
    return CheckResult(True, f"all {checked} closings re-checked with outward rounding; every clause's closings "
                             "cover its box", checked)


def _read_text(path: str | Path) -> str:
    data = _raw(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # not JSON: rejected as malformed


def _raw(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except OSError as error:
        raise InputError(path, None, f"cannot read: {error.strerror or error}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decoded(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedProperty(f"{path} is not UTF-8 text") from None


def _check_sizes(network: ReluNetwork, prop: Property, certificate: CertificateFile) -> None:
    if (prop.n_inputs, prop.n_outputs) != (network.n_inputs, network.n_outputs):
        raise Rejected(f"the property has {prop.n_inputs} inputs and {prop.n_outputs} outputs, the network "
                       f"{network.n_inputs} and {network.n_outputs}")
    if len(certificate.regions) != len(prop.regions):
        raise Rejected(f"{len(certificate.regions)} region proofs for {len(prop.regions)} regions")


def check_region(network: ReluNetwork, region: Region, closings: tuple[Closing, ...]) -> None:
    """Raise `Rejected` unless the closings prove every clause of the region unreachable."""
    if not region.clauses or not all(A.shape[0] for A, _ in region.clauses):
        raise Rejected("a clause without output constraints is always violated")
    split = _split_dimensions(closings, region.lower.size)
    for clause in range(len(region.clauses)):
        if not _covers((), {c.steps for c in closings if clause in c.clauses}, split):
            raise Rejected(f"the closings of clause {clause} do not cover the box")
    A = np.vstack([A for A, _ in region.clauses])
    b = np.concatenate([b for _, b in region.clauses])
    owner = np.concatenate([[k] * A_k.shape[0] for k, (A_k, _) in enumerate(region.clauses)])
    relu_sizes = [step.weight.shape[0] for step in network.steps if step.relu]
    for first in range(0, len(closings), CHUNK):
        _check_chunk(network, region, closings[first:first + CHUNK], A, b, owner, relu_sizes)


def _split_dimensions(closings: tuple[Closing, ...], n_inputs: int) -> dict[tuple[tuple[int, bool], ...], int]:
    """The dimension each internal node of the split tree is halved along."""
    dims: dict[tuple[tuple[int, bool], ...], int] = {}
    for closing in closings:
        if len(closing.steps) > MAX_DEPTH:
            raise Rejected(f"node {closing.path} is deeper than {MAX_DEPTH}")
        for depth, (dim, _) in enumerate(closing.steps):
            if dim >= n_inputs:
                raise Rejected(f"node {closing.path} splits input {dim} of {n_inputs}")
            if dims.setdefault(closing.steps[:depth], dim) != dim:
                raise Rejected(f"node {closing.steps[:depth]} is split along two dimensions")
    return dims


def _covers(node: tuple[tuple[int, bool], ...], closed: set[tuple[tuple[int, bool], ...]],
            split: dict[tuple[tuple[int, bool], ...], int]) -> bool:
    """Whether ``node``'s box is covered by closed nodes: it is closed, or split with both halves covered."""
    pending = [node]
    while pending:
        current = pending.pop()
        if current in closed:
            continue
        if current not in split:
            return False
        pending.extend(current + ((split[current], side),) for side in (False, True))
    return True


def _box(region: Region, steps: tuple[tuple[int, bool], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The node's box: halve at the (float64) midpoint. Both halves share the midpoint, so the two
    halves of a box cover it whatever the midpoint's rounding."""
    lower, upper = region.lower.copy(), region.upper.copy()
    for dim, upper_half in steps:
        middle = (lower[dim] + upper[dim]) / 2
        if upper_half:
            lower[dim] = middle
        else:
            upper[dim] = middle
    return lower, upper


def _check_chunk(network: ReluNetwork, region: Region, chunk: tuple[Closing, ...], A: np.ndarray, b: np.ndarray,
                 owner: np.ndarray, relu_sizes: list[int]) -> None:
    for closing in chunk:
        if len(closing.bounds) != len(relu_sizes) or any(
                len(lower) != n or len(upper) != n for (lower, upper), n in zip(closing.bounds, relu_sizes)):
            raise Rejected(f"node {closing.path}: recorded bounds do not match the network's ReLU layers")
    boxes = [_box(region, closing.steps) for closing in chunk]
    lower, upper = np.stack([l for l, _ in boxes]), np.stack([u for _, u in boxes])
    recorded = [(np.array([c.bounds[k][0] for c in chunk]), np.array([c.bounds[k][1] for c in chunk]))
                for k in range(len(relu_sizes))]
    bounds = layer_bounds(network, lower, upper, recorded)
    single, linear = row_bounds(network, bounds, A, b)
    nodes, weights, names = [], [], []
    for node, closing in enumerate(chunk):
        for clause, w in zip(closing.clauses, closing.weights):
            if clause >= len(region.clauses) or len(w) != owner.size:
                raise Rejected(f"node {closing.path}: clause {clause} or its weights do not fit the region")
            w_array = np.array(w)
            if np.any(w_array < 0) or np.any(w_array[owner != clause] != 0) or not np.any(w_array > 0):
                raise Rejected(f"node {closing.path}: clause {clause}: weights must be non-negative, on the "
                               "clause's own rows and not all zero")
            nodes.append(node)
            weights.append(w_array)
            names.append((closing.path, clause))
    if not nodes:
        return
    node_index, weight_matrix = np.array(nodes), np.stack(weights)
    one_row = np.count_nonzero(weight_matrix, axis=1) == 1
    value = np.empty(len(nodes))
    value[one_row] = single[node_index[one_row], weight_matrix[one_row].argmax(axis=1)]
    if np.any(~one_row):
        value[~one_row] = mixture_bounds(linear, node_index[~one_row], weight_matrix[~one_row], lower, upper)
    failed = np.flatnonzero(~(value > 0))
    if failed.size:
        path, clause = names[failed[0]]
        raise Rejected(f"node {path}: clause {clause}: the rigorous lower bound {value[failed[0]]:.3g} of the "
                       "weighted rows is not positive")
