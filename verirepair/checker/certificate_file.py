"""The checker's own reader of the certificate format (``verirepair-certificate-1``).

A JSON object ``{"format", "onnx_sha256", "vnnlib_sha256", "regions"}``; ``regions`` holds, per
region of the property, either

* an input-split proof: a list of closings ``[path, clauses, weights, bounds]`` or ``[path,
  clauses, weights, bounds, slopes]``: the node's path in the split tree (steps ``<dim><L|R>``),
  the clauses closed there, per clause the row weights over the region's rows, per activation
  layer the recorded ``[lower, upper]`` pre-activation bounds, and ReLU lower slopes ``[row,
  layer, neuron, alpha]`` for rows bounded with optimised slopes; or ``[path, clauses, {"solver":
  name}]``, a node whose clauses a MILP solver decided;
* or a ReLU-split proof ``{"method": "relu-split", "clauses": [...]}``: per clause either
  ``{"clause", "row", "leaves"}`` (the row proven positive on every leaf; a leaf is
  ``[splits, neurons]`` with splits ``[layer, neuron, 1 (active) | 0 (inactive)]`` and neurons
  ``[layer, neuron, lower, upper, alpha, beta_upper, beta_lower]``) or ``{"clause", "solver"}``;
  and optionally ``"slope_neurons"`` (per activation layer, neuron indices) and ``"lemmas"``: bounds
  of activation inputs on the region's box, ``[layer, neuron, 0 (lower) | 1 (upper), slopes]`` (per
  slope neuron of the layers before, one slope for a ReLU, two for a sigmoid or tanh: its lower
  and upper line's) or ``[layer, neuron, 0 | 1, value, solver]``;
* or an activation-split proof ``{"method": "activation-split", "clauses": [...]}``, the same
  (lemmas included) but with leaves ``[splits, neurons]`` of splits ``[layer, neuron, point, 1 (z
  >= point) | 0 (z <= point)]`` and neurons ``[layer, neuron, slope_low, slope_up, beta_upper,
  beta_lower]``.

Anything else is `MalformedCertificate`, with a message saying what.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

FORMAT = "verirepair-certificate-1"
_PATH = re.compile(r"(?:\d+[LR])*\Z")
_STEP = re.compile(r"(\d+)([LR])")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class MalformedCertificate(Exception):
    """The file is not a well-formed certificate (the message says where)."""


@dataclass(frozen=True)
class Closing:
    steps: tuple[tuple[int, bool], ...]  # (dimension, upper half) from the region's box
    clauses: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]
    bounds: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    slopes: tuple[tuple[int, int, int, float], ...] = ()  # (row, layer, neuron, alpha)

    @property
    def path(self) -> str:
        return "".join(f"{dim}{'R' if upper else 'L'}" for dim, upper in self.steps) or "(root)"


@dataclass(frozen=True)
class TrustedClosing:
    """A node of an input-split tree whose clauses a MILP solver decided (not re-checked)."""

    steps: tuple[tuple[int, bool], ...]
    clauses: tuple[int, ...]
    solver: str

    @property
    def path(self) -> str:
        return "".join(f"{dim}{'R' if upper else 'L'}" for dim, upper in self.steps) or "(root)"


@dataclass(frozen=True)
class ReluLeaf:
    """A leaf of a ReLU-split tree: its splits ``(layer, neuron, active)`` from the root, and per
    recorded neuron ``(layer, neuron, lower, upper, alpha, beta_upper, beta_lower)``."""

    splits: tuple[tuple[int, int, bool], ...]
    neurons: tuple[tuple[int, int, float, float, float, float, float], ...]


@dataclass(frozen=True)
class ActivationLeaf:
    """A leaf of an activation-split tree: its splits ``(layer, neuron, point, upper side)`` from
    the root, and per recorded neuron ``(layer, neuron, slope_low, slope_up, beta_upper,
    beta_lower)``."""

    splits: tuple[tuple[int, int, float, bool], ...]
    neurons: tuple[tuple[int, int, float, float, float, float], ...]


@dataclass(frozen=True)
class ReluSplitClause:
    """One clause of a ReLU-split region: ``row`` proven positive on every leaf, or, with
    ``solver`` set, decided by that MILP solver (no leaves)."""

    clause: int
    row: int
    leaves: tuple[ReluLeaf, ...]
    solver: str | None = None


@dataclass(frozen=True)
class ActivationSplitClause:
    """One clause of an activation-split region, as `ReluSplitClause`."""

    clause: int
    row: int
    leaves: tuple[ActivationLeaf, ...]
    solver: str | None = None


@dataclass(frozen=True)
class SlopeLemma:
    """A bound of one activation input on the region's box, to be derived by back-substitution
    with the slopes ``alphas`` (per slope neuron of the layers before ``layer``: a ReLU's lower
    slope, or a sigmoid's or tanh's lower and upper line's slopes)."""

    layer: int
    neuron: int
    upper: bool
    alphas: tuple[float, ...]


@dataclass(frozen=True)
class SolverLemma:
    """A bound ``value`` of one activation input on the region's box, proven by a MILP solver (not re-checked)."""

    layer: int
    neuron: int
    upper: bool
    value: float
    solver: str


@dataclass(frozen=True)
class Lemmas:
    """The lemmas of a ReLU-split or activation-split region and the neurons, per activation layer,
    that slope lemmas give slopes for."""

    slope_neurons: tuple[tuple[int, ...], ...]
    entries: tuple[SlopeLemma | SolverLemma, ...]


InputSplitProof = tuple[Closing | TrustedClosing, ...]
ReluSplitProof = tuple[ReluSplitClause, ...]
ActivationSplitProof = tuple[ActivationSplitClause, ...]


@dataclass(frozen=True)
class CertificateFile:
    onnx_sha256: str
    vnnlib_sha256: str
    regions: tuple[InputSplitProof | ReluSplitProof | ActivationSplitProof, ...]
    lemmas: tuple[Lemmas, ...]  # per region (none for input-split ones)


def parse_certificate(text: str) -> CertificateFile:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise MalformedCertificate(f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MalformedCertificate(f"not a {FORMAT} object")
    hashes = [data.get(key) for key in ("onnx_sha256", "vnnlib_sha256")]
    if not all(isinstance(h, str) and _SHA256.match(h) for h in hashes):
        raise MalformedCertificate("the file hashes are not SHA-256 hex digests")
    regions = data.get("regions")
    if not isinstance(regions, list):
        raise MalformedCertificate("regions is not a list")
    parsed: list[InputSplitProof | ReluSplitProof | ActivationSplitProof] = []
    lemmas: list[Lemmas] = []
    for r, region in enumerate(regions):
        if isinstance(region, dict):
            parsed.append(_relu_split(region, f"region {r}"))
            lemmas.append(_lemmas(region, f"region {r}"))
        elif isinstance(region, list):
            parsed.append(tuple(_closing(item, f"region {r}, closing {c}") for c, item in enumerate(region)))
            lemmas.append(Lemmas((), ()))
        else:
            raise MalformedCertificate(f"region {r} is neither a list of closings nor a split object")
    return CertificateFile(hashes[0], hashes[1], tuple(parsed), tuple(lemmas))


def _lemmas(region: dict, where: str) -> Lemmas:
    neurons, entries = region.get("slope_neurons", []), region.get("lemmas", [])
    if not isinstance(neurons, list) or not all(isinstance(layer, list) and all(_natural(n) for n in layer)
                                                 for layer in neurons):
        raise MalformedCertificate(f"{where}: slope_neurons is not a list of neuron numbers per layer")
    if not isinstance(entries, list):
        raise MalformedCertificate(f"{where}: lemmas is not a list")
    parsed: list[SlopeLemma | SolverLemma] = []
    for k, entry in enumerate(entries):
        at = f"{where}, lemma {k}"
        if not isinstance(entry, list) or len(entry) not in (4, 5) or not _natural(entry[0]) \
                or not _natural(entry[1]) or entry[2] not in (0, 1) or type(entry[2]) is not int:
            raise MalformedCertificate(f"{at}: not [layer, neuron, 0 | 1, alphas] or [layer, neuron, 0 | 1, value, "
                                       "solver]")
        if len(entry) == 4:
            parsed.append(SlopeLemma(entry[0], entry[1], entry[2] == 1, _numbers(entry[3], at)))
        else:
            parsed.append(SolverLemma(entry[0], entry[1], entry[2] == 1, _numbers([entry[3]], at)[0],
                                      _solver(entry[4], at)))
    return Lemmas(tuple(tuple(layer) for layer in neurons), tuple(parsed))


def _relu_split(region: dict, where: str) -> ReluSplitProof | ActivationSplitProof:
    method = region.get("method")
    if method not in ("relu-split", "activation-split") or not isinstance(region.get("clauses"), list):
        raise MalformedCertificate(f"{where}: not {{\"method\": \"relu-split\" | \"activation-split\", "
                                   "\"clauses\": [...]}")
    entry, leaf_of = (ReluSplitClause, _leaf) if method == "relu-split" else (ActivationSplitClause, _activation_leaf)
    proofs = []
    for k, item in enumerate(region["clauses"]):
        at = f"{where}, clause entry {k}"
        if not isinstance(item, dict) or not _natural(item.get("clause")):
            raise MalformedCertificate(f"{at}: not an object with a clause number")
        if "solver" in item:
            proofs.append(entry(item["clause"], -1, (), _solver(item["solver"], at)))
            continue
        leaves = item.get("leaves")
        if not _natural(item.get("row")) or not isinstance(leaves, list):
            raise MalformedCertificate(f"{at}: no row number and list of leaves")
        proofs.append(entry(item["clause"], item["row"], tuple(leaf_of(leaf, f"{at}, leaf {n}")
                                                               for n, leaf in enumerate(leaves))))
    return tuple(proofs)  # type: ignore[return-value]


def _activation_leaf(leaf: object, where: str) -> ActivationLeaf:
    if not isinstance(leaf, list) or len(leaf) != 2 or not all(isinstance(part, list) for part in leaf):
        raise MalformedCertificate(f"{where}: not [splits, neurons]")
    splits, neurons = leaf
    parsed_splits = []
    for split in splits:
        if not isinstance(split, list) or len(split) != 4 or not _natural(split[0]) or not _natural(split[1]) \
                or split[3] not in (0, 1) or type(split[3]) is not int:
            raise MalformedCertificate(f"{where}: a split is not [layer, neuron, point, 1 | 0]")
        parsed_splits.append((split[0], split[1], _numbers([split[2]], where)[0], split[3] == 1))
    parsed = []
    for entry in neurons:
        if not isinstance(entry, list) or len(entry) != 6 or not _natural(entry[0]) or not _natural(entry[1]):
            raise MalformedCertificate(f"{where}: a neuron is not [layer, neuron, slope_low, slope_up, beta_upper, "
                                       "beta_lower]")
        parsed.append((entry[0], entry[1], *_numbers(entry[2:], where)))
    return ActivationLeaf(tuple(parsed_splits), tuple(parsed))  # type: ignore[arg-type]


def _leaf(leaf: object, where: str) -> ReluLeaf:
    if not isinstance(leaf, list) or len(leaf) != 2 or not all(isinstance(part, list) for part in leaf):
        raise MalformedCertificate(f"{where}: not [splits, neurons]")
    splits, neurons = leaf
    if not all(isinstance(s, list) and len(s) == 3 and all(_natural(v) for v in s) and s[2] in (0, 1) for s in splits):
        raise MalformedCertificate(f"{where}: a split is not [layer, neuron, 1 | 0]")
    parsed = []
    for entry in neurons:
        if not isinstance(entry, list) or len(entry) != 7 or not _natural(entry[0]) or not _natural(entry[1]):
            raise MalformedCertificate(f"{where}: a neuron is not [layer, neuron, lower, upper, alpha, beta_upper, "
                                       "beta_lower]")
        parsed.append((entry[0], entry[1], *_numbers(entry[2:], where)))
    return ReluLeaf(tuple((s[0], s[1], s[2] == 1) for s in splits), tuple(parsed))  # type: ignore[arg-type]


def _natural(value: object) -> bool:
    return type(value) is int and value >= 0


def _solver(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedCertificate(f"{where}: the solver is not named")
    return value


def _closing(item: object, where: str) -> Closing | TrustedClosing:
    if not isinstance(item, list) or len(item) not in (3, 4, 5):
        raise MalformedCertificate(f"{where}: not [path, clauses, weights, bounds(, slopes)] or "
                                   "[path, clauses, {\"solver\"}]")
    path, clauses = item[0], item[1]
    if not isinstance(path, str) or not _PATH.match(path):
        raise MalformedCertificate(f"{where}: malformed node path {path!r}")
    steps = tuple((int(dim), side == "R") for dim, side in _STEP.findall(path))
    if not isinstance(clauses, list) or not all(type(k) is int and k >= 0 for k in clauses) \
            or len(set(clauses)) != len(clauses):
        raise MalformedCertificate(f"{where}: clauses are not distinct non-negative integers")
    if len(item) == 3:
        if not isinstance(item[2], dict):
            raise MalformedCertificate(f"{where}: a three-part closing must end with {{\"solver\": name}}")
        return TrustedClosing(steps, tuple(clauses), _solver(item[2].get("solver"), where))
    weights, bounds = item[2], item[3]
    if not isinstance(weights, list) or len(weights) != len(clauses):
        raise MalformedCertificate(f"{where}: not one weight vector per clause")
    if not isinstance(bounds, list) or not all(isinstance(layer, list) and len(layer) == 2 for layer in bounds):
        raise MalformedCertificate(f"{where}: bounds are not [lower, upper] per layer")
    slopes = item[4] if len(item) == 5 else []
    if not isinstance(slopes, list) or not all(isinstance(entry, list) and len(entry) == 4 and all(
            _natural(v) for v in entry[:3]) for entry in slopes):
        raise MalformedCertificate(f"{where}: slopes are not [row, layer, neuron, alpha] entries")
    return Closing(steps, tuple(clauses), tuple(_numbers(w, where) for w in weights),
                   tuple((_numbers(lower, where), _numbers(upper, where)) for lower, upper in bounds),
                   tuple((row, layer, neuron, _numbers([alpha], where)[0]) for row, layer, neuron, alpha in slopes))


def _numbers(values: object, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
        raise MalformedCertificate(f"{where}: expected a list of numbers")
    try:
        numbers = tuple(float(v) for v in values)
    except OverflowError:
        raise MalformedCertificate(f"{where}: a number is out of the float64 range") from None
    if not all(math.isfinite(v) for v in numbers):
        raise MalformedCertificate(f"{where}: a number is not finite")
    return numbers
