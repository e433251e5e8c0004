"""Re-check a proof certificate without any of the verifier's code.

The network is read by `onnx_reader`, the property by `vnnlib_reader`, the certificate by
`certificate_file`, and every bound is computed by `bounds` with outward rounding. The
certificate is accepted only if

* it names the same files (SHA-256 of their bytes as given) and has one proof per region;
* on every closing node, for every clause closed there, the recorded weights (non-negative, on
  the clause's own rows, not all zero) combine the clause's rows ``a·y - b`` into a function whose
  rigorous lower bound on the node's box is positive (so no point of the box satisfies all rows:
  the clause is unreachable there). The bound rests on hidden-layer bounds that this checker
  derives itself from the root down (every node of the tree: CROWN on its box, clamped to its
  parent's bounds, which hold on it too), each widened to contain the certificate's recorded
  bound where that is looser; a row with recorded ReLU slopes is bounded with them (any slope in
  [0, 1] gives a valid bound);
* for every clause of every region, the nodes closing it cover the region's box: the split tree
  is complete (each split node has both halves, each of them closed or split further).

A region may instead carry a ReLU-split proof: per clause, one of its rows and the leaves of a
tree of ReLU splits (each internal node splits one neuron's input into >= 0 and <= 0). Each
leaf is accepted when this checker's bounds on the points of the box meeting its splits (CROWN
from the box with the splits and the region's root bounds as clamps, widened to the recorded
bounds) cross, or when the Lagrangian bound of the row with the recorded slopes and multipliers
(clipped to [0, 1] and >= 0) is positive; the leaves must form a complete tree. The root bounds
are this checker's own CROWN bounds of the box tightened by the region's lemmas (`lemmas`):
slope lemmas it re-derives, solver lemmas it lists as trusted.

A region may also carry an activation-split proof: the same per clause, with leaves of a tree of
splits of activation inputs at points (``z <= point`` and ``z >= point``); each node's bounds are
derived top-down from its parent's (`_check_activation_tree`), the root's from the region's
lemmas as for ReLU split, and each leaf is accepted when its domain is empty or the
back-substitution bound of the row, with the recorded slopes and multipliers, is positive.

Nodes, clauses or lemmas that a MILP solver decided are not re-checked: they are listed in the result
(`CheckResult.trusted`) so a caller can see exactly what rests on the solver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import decompressed
from .bounds import (
    LinearBound,
    NodeBounds,
    lagrangian_bounds,
    layer_bounds,
    mixture_bounds,
    row_bounds,
    to_input,
)
from .certificate_file import (
    ActivationLeaf,
    ActivationSplitClause,
    ActivationSplitProof,
    CertificateFile,
    Closing,
    InputSplitProof,
    Lemmas,
    MalformedCertificate,
    ReluLeaf,
    ReluSplitClause,
    ReluSplitProof,
    TrustedClosing,
    parse_certificate,
)
from .lemmas import BadLemma, Bounds, root_bounds
from .onnx_reader import DenseNetwork, UnsupportedNetwork, read_network
from .vnnlib_reader import Property, Region, UnsupportedProperty, read_property

CHUNK = 256  # nodes bounded at once
MAX_DEPTH = 400  # deeper split trees are rejected (a box halved 400 times is below float64 resolution)
MAX_RELU_DEPTH = 100_000  # ReLU splits on one path (a neuron split twice on a path only repeats itself)

NO_LEMMAS = Lemmas((), ())
Step = tuple[object, bool]  # (what is split: an input dimension or a (layer, neuron) pair, which side)


@dataclass(frozen=True)
class CheckResult:
    """``ok``: everything that was checked holds and the proofs cover every clause; ``trusted``
    names the nodes and clauses a MILP solver decided, which were not re-checked (empty: the
    whole proof was re-checked)."""

    ok: bool
    message: str
    closings_checked: int
    trusted: tuple[str, ...] = ()


class Rejected(Exception):
    """The certificate does not prove the property (the message says why)."""


def check_certificate(onnx_path: str | Path, vnnlib_path: str | Path, certificate_path: str | Path) -> CheckResult:
    """Re-check the certificate at ``certificate_path`` for the network and property files. A file
    that cannot be read is an `InputError`; anything wrong with the certificate, or a network or
    property this checker does not read, is a rejection."""
    certificate_text = _read_text(certificate_path)
    onnx_bytes, vnnlib_bytes = _raw(onnx_path), _raw(vnnlib_path)
    checked = 0
    trusted: list[str] = []
    try:
        certificate = parse_certificate(certificate_text)
        if certificate.onnx_sha256 != _sha256(onnx_bytes) or certificate.vnnlib_sha256 != _sha256(vnnlib_bytes):
            raise Rejected("the certificate was made for other files (SHA-256 differs)")
        network = read_network(decompressed(onnx_bytes, onnx_path), onnx_path)
        prop = read_property(_decoded(decompressed(vnnlib_bytes, vnnlib_path), vnnlib_path))
        _check_sizes(network, prop, certificate)
        for index, (region, proof, lemmas) in enumerate(zip(prop.regions, certificate.regions, certificate.lemmas)):
            try:
                if proof and isinstance(proof[0], ReluSplitClause):
                    found = check_relu_region(network, region, proof, lemmas)  # type: ignore[arg-type]
                elif proof and isinstance(proof[0], ActivationSplitClause):
                    found = check_activation_region(network, region, proof, lemmas)  # type: ignore[arg-type]
                else:
                    found = check_region(network, region, proof)  # type: ignore[arg-type]
            except Rejected as rejection:
                raise Rejected(f"region {index}: {rejection}") from None
            checked += found[0]
            trusted.extend(f"region {index}: {what}" for what in found[1])
    except MalformedCertificate as error:
        return CheckResult(False, f"not a verirepair certificate: {error}", checked)
    except (UnsupportedNetwork, UnsupportedProperty) as error:
        return CheckResult(False, f"the checker cannot read this problem: {error}", checked)
    except Rejected as rejection:
        return CheckResult(False, str(rejection), checked)
    if trusted:
        return CheckResult(True, f"{checked} closings and leaves re-checked with outward rounding, {len(trusted)} "
                                 "decided by a MILP solver and not re-checked; together they cover every clause's box",
                           checked, tuple(trusted))
    return CheckResult(True, f"all {checked} closings and leaves re-checked with outward rounding; every clause's closings "
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


def _check_sizes(network: DenseNetwork, prop: Property, certificate: CertificateFile) -> None:
    if (prop.n_inputs, prop.n_outputs) != (network.n_inputs, network.n_outputs):
        raise Rejected(f"the property has {prop.n_inputs} inputs and {prop.n_outputs} outputs, the network "
                       f"{network.n_inputs} and {network.n_outputs}")
    if len(certificate.regions) != len(prop.regions):
        raise Rejected(f"{len(certificate.regions)} region proofs for {len(prop.regions)} regions")


def check_region(network: DenseNetwork, region: Region, closings: InputSplitProof) -> tuple[int, list[str]]:
    """Raise `Rejected` unless the closings prove every clause of the region unreachable (those a
    solver decided taken on trust). Returns the number of closings checked and the trusted ones."""
    _check_clauses(region)
    for closing in closings:
        if len(closing.steps) > MAX_DEPTH:
            raise Rejected(f"node {closing.path} is deeper than {MAX_DEPTH}")
        if any(dim >= region.lower.size for dim, _ in closing.steps):
            raise Rejected(f"node {closing.path} splits an input the network does not have")
    split = _split_tree([c.steps for c in closings])
    for clause in range(len(region.clauses)):
        if not _covers((), {c.steps for c in closings if clause in c.clauses}, split):
            raise Rejected(f"the closings of clause {clause} do not cover the box")
    checked = tuple(c for c in closings if isinstance(c, Closing))
    trusted = [f"node {c.path}, clauses {list(c.clauses)}: {c.solver}" for c in closings if isinstance(c, TrustedClosing)]
    A = np.vstack([A for A, _ in region.clauses])
    b = np.concatenate([b for _, b in region.clauses])
    owner = np.concatenate([[k] * A_k.shape[0] for k, (A_k, _) in enumerate(region.clauses)])
    layer_sizes = network.activation_sizes
    at_node: dict[tuple[tuple[int, bool], ...], list[Closing]] = {}
    for closing in checked:
        _check_closing_shape(closing, layer_sizes, owner.size)
        at_node.setdefault(closing.steps, []).append(closing)
    nodes = {steps[:depth] for steps in at_node for depth in range(len(steps) + 1)}
    levels: dict[int, list[tuple[tuple[int, bool], ...]]] = {}
    for steps in sorted(nodes):
        levels.setdefault(len(steps), []).append(steps)
    parents: dict[tuple[tuple[int, bool], ...], list[tuple[np.ndarray, np.ndarray]]] = {}
    for depth in sorted(levels):
        derived: dict[tuple[tuple[int, bool], ...], list[tuple[np.ndarray, np.ndarray]]] = {}
        for first in range(0, len(levels[depth]), CHUNK):
            chunk = levels[depth][first:first + CHUNK]
            bounds = _node_bounds(network, region, chunk, at_node, parents, layer_sizes)
            activated = [k for k, step in enumerate(network.steps) if step.activation is not None]
            for index, steps in enumerate(chunk):
                derived[steps] = [(bounds.pre_activation[k][0][index], bounds.pre_activation[k][1][index])
                                  for k in activated]
            _check_closings(network, bounds, [(index, closing) for index, steps in enumerate(chunk)
                                              for closing in at_node.get(steps, [])], A, b, owner)
        parents = derived
    return len(checked), trusted


def _check_clauses(region: Region) -> None:
    if not region.clauses or not all(A.shape[0] for A, _ in region.clauses):
        raise Rejected("a clause without output constraints is always violated")


def check_relu_region(network: DenseNetwork, region: Region, proofs: ReluSplitProof,
                      lemmas: Lemmas = NO_LEMMAS) -> tuple[int, list[str]]:
    """Raise `Rejected` unless, for every clause of the region, some entry proves it on a complete
    tree of ReLU splits (or a solver decided it), from the root bounds that the region's lemmas
    give (`lemmas.root_bounds`). Returns the leaves checked and the trusted clauses and lemmas."""
    try:
        root, trusted_lemmas = root_bounds(network, region, lemmas)
    except BadLemma as error:
        raise Rejected(str(error)) from None

    def check(steps: list[tuple[Step, ...]], leaves: tuple[ReluLeaf, ...], a: np.ndarray, b: float, clause: int) -> None:
        for first in range(0, len(leaves), CHUNK):
            _check_leaves(network, region, leaves[first:first + CHUNK], a, b, network.activation_sizes, clause, root)

    checked, trusted = _check_split_region(region, proofs,
                                           lambda leaf, clause: _leaf_steps(leaf, network.activation_sizes, clause),
                                           check, "ReLU splits")
    return checked, trusted_lemmas + trusted


def check_activation_region(network: DenseNetwork, region: Region, proofs: ActivationSplitProof,
                            lemmas: Lemmas = NO_LEMMAS) -> tuple[int, list[str]]:
    """Raise `Rejected` unless, for every clause of the region, some entry proves it on a complete
    tree of activation splits (see `_check_activation_tree`) from the root bounds that the
    region's lemmas give (`lemmas.root_bounds`), or a solver decided it. Returns the leaves
    checked and the trusted clauses and lemmas."""
    try:
        root, trusted_lemmas = root_bounds(network, region, lemmas)
    except BadLemma as error:
        raise Rejected(str(error)) from None

    def check(steps: list[tuple[Step, ...]], leaves: tuple[ActivationLeaf, ...], a: np.ndarray, b: float,
              clause: int) -> None:
        if len(set(steps)) != len(steps):
            raise Rejected(f"clause {clause}: two leaves have the same splits")
        _check_activation_tree(network, region, dict(zip(steps, leaves)), a, b, clause, root)

    checked, trusted = _check_split_region(region, proofs,
                                           lambda leaf, clause: _leaf_steps(leaf, network.activation_sizes, clause),
                                           check, "activation splits")
    return checked, trusted_lemmas + trusted


def _check_split_region(region: Region, proofs: ReluSplitProof | ActivationSplitProof,
                        steps_of: Callable[[Any, int], tuple[Step, ...]],
                        check: Callable[[list[tuple[Step, ...]], Any, np.ndarray, float, int], None],
                        splits: str) -> tuple[int, list[str]]:
    """Per clause entry: the row is the clause's, the leaves' paths (``steps_of``) form a complete
    tree, and ``check`` accepts the leaves; every clause has an entry. Returns the leaves checked
    and the trusted clauses."""
    _check_clauses(region)
    owner = np.concatenate([[k] * A_k.shape[0] for k, (A_k, _) in enumerate(region.clauses)])
    A = np.vstack([A for A, _ in region.clauses])
    b = np.concatenate([b for _, b in region.clauses])
    covered: set[int] = set()
    checked, trusted = 0, []
    for proof in proofs:
        if proof.clause >= len(region.clauses):
            raise Rejected(f"clause {proof.clause} is not a clause of the region")
        if proof.solver is not None:
            trusted.append(f"clause {proof.clause}: {proof.solver}")
            covered.add(proof.clause)
            continue
        if proof.row >= owner.size or owner[proof.row] != proof.clause:
            raise Rejected(f"clause {proof.clause}: row {proof.row} is not one of its rows")
        steps = [steps_of(leaf, proof.clause) for leaf in proof.leaves]
        if not _covers((), set(steps), _split_tree(steps)):
            raise Rejected(f"clause {proof.clause}: the leaves do not form a complete tree of {splits}")
        check(steps, proof.leaves, A[proof.row], float(b[proof.row]), proof.clause)
        checked += len(proof.leaves)
        covered.add(proof.clause)
    missing = sorted(set(range(len(region.clauses))) - covered)
    if missing:
        raise Rejected(f"clause {missing[0]} has no proof")
    return checked, trusted


def _check_activation_tree(network: DenseNetwork, region: Region, leaves: dict[tuple[Step, ...], ActivationLeaf],
                           a: np.ndarray, b: float, clause: int, root: Bounds) -> None:
    """Every leaf's row ``a·y - b`` is positive on its domain, or the domain is empty.

    A node's domain is the points of the box where each split on its path holds (``z <= point``
    or ``z >= point``). Its bounds are derived top-down, as the verifier derives them: CROWN from
    the box, every activation input clamped to its parent's bounds (which hold on the parent's
    domain, so on this one) with the node's own split applied. The root's limits are ``root``
    (bounds of every activation input on the whole box: `lemmas.root_bounds`). A leaf is
    then bounded by back-substitution with its recorded slopes and multipliers (any values are
    valid: offsets are rigorous for any slope, multipliers are clipped to >= 0), CROWN's lines and
    intervals, the best of the three.
    """
    sizes = network.activation_sizes
    by_depth: dict[int, set[tuple[Step, ...]]] = {}
    for steps in leaves:
        for depth in range(len(steps) + 1):
            by_depth.setdefault(depth, set()).add(steps[:depth])
    derived: dict[tuple[Step, ...], list[tuple[np.ndarray, np.ndarray]]] = {}
    for depth in sorted(by_depth):
        nodes = sorted(by_depth[depth], key=repr)
        parents = derived
        derived = {}
        for first in range(0, len(nodes), CHUNK):
            chunk = nodes[first:first + CHUNK]
            limits = [(np.full((len(chunk), n), -np.inf), np.full((len(chunk), n), np.inf)) for n in sizes]
            for index, node in enumerate(chunk):
                if not node:
                    for k, (low, high) in enumerate(root):
                        limits[k][0][index], limits[k][1][index] = low[0], high[0]
                    continue
                for k, (low, high) in enumerate(parents[node[:-1]]):
                    limits[k][0][index], limits[k][1][index] = low, high
                (layer, neuron, point), upper_side = node[-1]
                if upper_side:
                    limits[layer][0][index, neuron] = max(limits[layer][0][index, neuron], point)
                else:
                    limits[layer][1][index, neuron] = min(limits[layer][1][index, neuron], point)
            _bound_activation_nodes(network, region, chunk, limits, leaves, derived, a, b, clause)


def _bound_activation_nodes(network: DenseNetwork, region: Region, chunk: list[tuple[Step, ...]],
                            limits: list[tuple[np.ndarray, np.ndarray]],
                            leaves: dict[tuple[Step, ...], ActivationLeaf],
                            derived: dict[tuple[Step, ...], list[tuple[np.ndarray, np.ndarray]]],
                            a: np.ndarray, b: float, clause: int) -> None:
    """Bound the nodes under their limits, keep their bounds in ``derived`` (for their children),
    check the leaves."""
    sizes = network.activation_sizes
    count = len(chunk)
    lower = np.broadcast_to(region.lower, (count, region.lower.size))
    upper = np.broadcast_to(region.upper, (count, region.upper.size))
    unrecorded = [(np.full((count, n), np.inf), np.full((count, n), -np.inf)) for n in sizes]
    with np.errstate(all="ignore"):  # an empty node's crossed bounds give meaningless numbers, unused
        bounds = layer_bounds(network, lower, upper, unrecorded, limits)
    activated = [k for k, step in enumerate(network.steps) if step.activation is not None]
    at_leaf = [index for index, node in enumerate(chunk) if node in leaves]
    for index, node in enumerate(chunk):
        derived[node] = [(bounds.pre_activation[k][0][index], bounds.pre_activation[k][1][index]) for k in activated]
    if not at_leaf:
        return
    assert bounds.empty is not None
    alphas = [np.full((count, n, 2), np.nan) for n in sizes]
    multipliers = [(np.zeros((count, n)), np.zeros((count, n))) for n in sizes]
    for index in at_leaf:
        for layer, neuron, slope_low, slope_up, to_upper, to_lower in leaves[chunk[index]].neurons:
            alphas[layer][index, neuron] = slope_low, slope_up
            multipliers[layer][0][index, neuron], multipliers[layer][1][index, neuron] = to_upper, to_lower
    with np.errstate(all="ignore"):
        value = lagrangian_bounds(network, bounds, a, -b, alphas, multipliers)
    for index in at_leaf:
        if not (bounds.empty[index] or value[index] > 0):
            splits = [[layer, neuron, point, int(side)] for (layer, neuron, point), side in chunk[index]]
            raise Rejected(f"clause {clause}: leaf with splits {splits}: the rigorous lower bound {value[index]:.3g} "
                           "of the row is not positive")


def _leaf_steps(leaf: ReluLeaf | ActivationLeaf, layer_sizes: list[int], clause: int) -> tuple[Step, ...]:
    """The leaf's path: per split, what is split (the layer and neuron, and the point of an
    activation split) and the side."""
    if len(leaf.splits) > MAX_RELU_DEPTH:
        raise Rejected(f"clause {clause}: a leaf deeper than {MAX_RELU_DEPTH} splits")
    for layer, neuron, *_ in (*leaf.splits, *leaf.neurons):
        if layer >= len(layer_sizes) or neuron >= layer_sizes[layer]:
            raise Rejected(f"clause {clause}: neuron {neuron} of activation layer {layer} is not in the network")
    return tuple((tuple(split[:-1]), split[-1]) for split in leaf.splits)


def _check_leaves(network: DenseNetwork, region: Region, leaves: tuple[ReluLeaf, ...], a: np.ndarray, b: float,
                  layer_sizes: list[int], clause: int, root: Bounds) -> None:
    """Every leaf's row ``a·y - b`` is positive on the points of the box meeting its splits, or
    there are none (``root``: bounds of every ReLU input on the whole box)."""
    count = len(leaves)
    active = [np.zeros((count, n), dtype=bool) for n in layer_sizes]
    inactive = [np.zeros((count, n), dtype=bool) for n in layer_sizes]
    recorded = [(np.full((count, n), np.inf), np.full((count, n), -np.inf)) for n in layer_sizes]
    alphas = [np.full((count, n, 2), np.nan) for n in layer_sizes]
    multipliers = [(np.zeros((count, n)), np.zeros((count, n))) for n in layer_sizes]
    for index, leaf in enumerate(leaves):
        for layer, neuron, is_active in leaf.splits:
            (active if is_active else inactive)[layer][index, neuron] = True
        for layer, neuron, lower, upper, alpha, to_upper, to_lower in leaf.neurons:
            recorded[layer][0][index, neuron], recorded[layer][1][index, neuron] = lower, upper
            alphas[layer][index, neuron, 0] = alpha
            multipliers[layer][0][index, neuron], multipliers[layer][1][index, neuron] = to_upper, to_lower
    lower = np.broadcast_to(region.lower, (count, region.lower.size))
    upper = np.broadcast_to(region.upper, (count, region.upper.size))
    splits = [(np.where(act, np.maximum(low, 0.0), low), np.where(ina, np.minimum(high, 0.0), high))
              for act, ina, (low, high) in zip(active, inactive, root)]
    # A neuron stable on the root bounds is relaxed exactly whatever its bounds on a leaf, and the
    # verifier re-bounds only neurons unstable on them: back-substitution for the others (unstable
    # on the root bounds or in a recorded bound) finds every crossing it finds.
    tightened = [((low[0] < 0) & (high[0] > 0)) | ((rec_low < 0) & (rec_high > 0)).any(axis=0)
                 for (low, high), (rec_low, rec_high) in zip(root, recorded)]
    bounds = layer_bounds(network, lower, upper, recorded, splits, tightened=tightened)
    value = lagrangian_bounds(network, bounds, a, -b, alphas, multipliers)
    assert bounds.empty is not None
    closed = (value > 0) | bounds.empty
    if not closed.all():
        # CROWN is not monotone in its intermediate bounds: where the recorded bounds widened this
        # checker's own, its own alone may give the better bound (both are valid).
        again = np.flatnonzero(~closed)
        own = layer_bounds(network, lower[again], upper[again],
                           [(np.full((again.size, n), np.inf), np.full((again.size, n), -np.inf)) for n in layer_sizes],
                           [(low[again], high[again]) for low, high in splits], tightened=tightened)
        value[again] = np.maximum(value[again], lagrangian_bounds(network, own, a, -b, [al[again] for al in alphas],
                                                                  [(u[again], l[again]) for u, l in multipliers]))
        assert own.empty is not None
        closed[again] = (value[again] > 0) | own.empty
    failed = np.flatnonzero(~closed)
    if failed.size:
        splits = leaves[failed[0]].splits
        raise Rejected(f"clause {clause}: leaf with splits {[list(s) for s in splits]}: the rigorous lower bound "
                       f"{value[failed[0]]:.3g} of the row is not positive")


def _split_tree(step_lists: list[tuple[Step, ...]]) -> dict[tuple[Step, ...], object]:
    """What each internal node of the split tree is split on."""
    split: dict[tuple[Step, ...], object] = {}
    for steps in step_lists:
        for depth, (what, _) in enumerate(steps):
            if split.setdefault(steps[:depth], what) != what:
                raise Rejected(f"node {steps[:depth]} is split two ways")
    return split


def _covers(node: tuple[Step, ...], closed: set[tuple[Step, ...]], split: dict[tuple[Step, ...], object]) -> bool:
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


def _check_closing_shape(closing: Closing, layer_sizes: list[int], n_rows: int) -> None:
    if len(closing.bounds) != len(layer_sizes) or any(
            len(lower) != n or len(upper) != n for (lower, upper), n in zip(closing.bounds, layer_sizes)):
        raise Rejected(f"node {closing.path}: recorded bounds do not match the network's activation layers")
    for row, layer, neuron, _ in closing.slopes:
        if row >= n_rows or layer >= len(layer_sizes) or neuron >= layer_sizes[layer]:
            raise Rejected(f"node {closing.path}: a slope of row {row}, layer {layer}, neuron {neuron}, which the "
                           "region or the network does not have")


def _node_bounds(network: DenseNetwork, region: Region, chunk: list[tuple[tuple[int, bool], ...]],
                 at_node: dict[tuple[tuple[int, bool], ...], list[Closing]],
                 parents: dict[tuple[tuple[int, bool], ...], list[tuple[np.ndarray, np.ndarray]]],
                 layer_sizes: list[int]) -> NodeBounds:
    """Bounds of every layer on the nodes' boxes: derived from the box, clamped to the parent's
    bounds (the root has none), widened to the looser of the recorded bounds of the closings there."""
    boxes = [_box(region, steps) for steps in chunk]
    lower, upper = np.stack([l for l, _ in boxes]), np.stack([u for _, u in boxes])
    count = len(chunk)
    recorded = [(np.full((count, n), np.inf), np.full((count, n), -np.inf)) for n in layer_sizes]
    limits = [(np.full((count, n), -np.inf), np.full((count, n), np.inf)) for n in layer_sizes]
    for index, steps in enumerate(chunk):
        for closing in at_node.get(steps, []):
            for layer, (low, high) in enumerate(closing.bounds):
                recorded[layer][0][index] = np.minimum(recorded[layer][0][index], low)
                recorded[layer][1][index] = np.maximum(recorded[layer][1][index], high)
        if steps:
            for layer, (low, high) in enumerate(parents[steps[:-1]]):
                limits[layer][0][index], limits[layer][1][index] = low, high
    bounds = layer_bounds(network, lower, upper, recorded, limits)
    assert bounds.empty is not None
    if bounds.empty.any():  # the parent's bounds hold on the box, so they cannot exclude all of it
        raise Rejected(f"node {chunk[int(np.argmax(bounds.empty))]}: its bounds cross its parent's")
    return bounds


def _check_closings(network: DenseNetwork, bounds: NodeBounds, closings: list[tuple[int, Closing]], A: np.ndarray,
                    b: np.ndarray, owner: np.ndarray) -> None:
    """Every clause of each closing (on node ``index`` of ``bounds``) has a positive bound."""
    if not closings:
        return
    single, linear = row_bounds(network, bounds, A, b)
    node_of = np.array([index for index, _ in closings])
    single, coefficients = single[node_of].copy(), linear.coefficients[node_of].copy()
    constant, error = linear.constant[node_of].copy(), linear.error[node_of].copy()
    optimised = [(position, row) for position, (_, closing) in enumerate(closings)
                 for row in sorted({entry[0] for entry in closing.slopes})]
    if optimised:
        with_slopes = _rows_with_slopes(network, bounds, closings, node_of, optimised, A, b)
        value = with_slopes.minimum(bounds.lower[node_of[[p for p, _ in optimised]]],
                                    bounds.upper[node_of[[p for p, _ in optimised]]])[:, 0]
        for pair, (position, row) in enumerate(optimised):
            single[position, row] = max(single[position, row], value[pair])
            coefficients[position, row] = with_slopes.coefficients[pair, 0]
            constant[position, row], error[position, row] = with_slopes.constant[pair, 0], with_slopes.error[pair, 0]
    queries, weights, names = [], [], []
    for position, (_, closing) in enumerate(closings):
        for clause, w in zip(closing.clauses, closing.weights):
            if clause >= owner.max() + 1 or len(w) != owner.size:
                raise Rejected(f"node {closing.path}: clause {clause} or its weights do not fit the region")
            w_array = np.array(w)
            if np.any(w_array < 0) or np.any(w_array[owner != clause] != 0) or not np.any(w_array > 0):
                raise Rejected(f"node {closing.path}: clause {clause}: weights must be non-negative, on the "
                               "clause's own rows and not all zero")
            queries.append(position)
            weights.append(w_array)
            names.append((closing.path, clause))
    if not queries:
        return
    query_index, weight_matrix = np.array(queries), np.stack(weights)
    one_row = np.count_nonzero(weight_matrix, axis=1) == 1
    value = np.empty(len(queries))
    value[one_row] = single[query_index[one_row], weight_matrix[one_row].argmax(axis=1)]
    if np.any(~one_row):
        value[~one_row] = mixture_bounds(LinearBound(coefficients, constant, error), query_index[~one_row],
                                         weight_matrix[~one_row], bounds.lower[node_of], bounds.upper[node_of])
    failed = np.flatnonzero(~(value > 0))
    if failed.size:
        path, clause = names[failed[0]]
        raise Rejected(f"node {path}: clause {clause}: the rigorous lower bound {value[failed[0]]:.3g} of the "
                       "weighted rows is not positive")


def _rows_with_slopes(network: DenseNetwork, bounds: NodeBounds, closings: list[tuple[int, Closing]],
                      node_of: np.ndarray, optimised: list[tuple[int, int]], A: np.ndarray, b: np.ndarray) -> LinearBound:
    """[Q, 1, n_in]: per (closing, row) of ``optimised``, the row's linear lower bound over the
    input with the closing's recorded ReLU slopes (CROWN's adaptive slope elsewhere)."""
    pairs = node_of[[position for position, _ in optimised]]
    mine = bounds.take(pairs)
    sizes = network.activation_sizes
    alphas = [np.full((len(optimised), n, 2), np.nan) for n in sizes]
    for pair, (position, row) in enumerate(optimised):
        for entry_row, layer, neuron, alpha in closings[position][1].slopes:
            if entry_row == row:
                alphas[layer][pair, neuron, 0] = alpha
    rows = np.array([row for _, row in optimised])
    last = len(network.steps) - 1
    step = network.steps[last]
    output = LinearBound(A[rows][:, None, :], -b[rows][:, None], np.zeros((rows.size, 1)))
    output = output.through_affine(step.weight, step.bias, mine.input_magnitudes[last])
    return to_input(network, mine, output, last, alphas)
