"""Proof certificates for `unsat` answers of input-split, ReLU-split and activation-split branch and bound.

An input-split region lists the nodes of the split tree where clauses were closed: a node is a
path from the root box (steps ``<dim><L|R>``: halve dimension ``dim`` at its midpoint and keep the
lower or upper half) plus, for each clause closed there, the row weights ``λ`` whose combination
was proven positive on the node's box, or the MILP solver that decided it (`TrustedClosing`).
A ReLU-split region lists, per clause, the leaves of its tree of ReLU splits with the slopes and
multipliers of each leaf's bound (`ReluLeafRecord`), or the solver that decided the clause; an
activation-split region the same, with splits of sigmoid/tanh inputs at points. A ReLU-split
region may start from bounds beyond CROWN's, recorded as lemmas (`lemmas.RootLemmas`).
`verirepair.checker` re-checks every node and leaf with an independent implementation, checks
that they cover the region, and lists what rests on a solver.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text

FORMAT = "verirepair-certificate-1"


@dataclass
class Closing:
    """Clauses closed on one node of the split tree.

    ``bounds`` are the verifier's pre-activation bounds of every hidden layer on the node's box
    (each node's intersected with its parent's); the checker (`verirepair.checker`) uses the looser
    of each and its own derivation. ``slopes`` ``[row, layer, neuron, alpha]``: the ReLU lower
    slopes of the rows whose bounds α-CROWN optimised (CROWN's adaptive slope elsewhere).
    """

    path: str
    clauses: list[int]
    weights: list[list[float]]  # per closed clause, λ over the region's rows
    bounds: list[list[list[float]]]  # per hidden layer, [lower, upper]
    slopes: list[list[float]] = field(default_factory=list)


@dataclass
class TrustedClosing:
    """Clauses of one node of the split tree decided by a MILP solver (the checker trusts them)."""

    path: str
    clauses: list[int]
    solver: str


@dataclass
class ReluLeafRecord:
    """A closed leaf of a neuron-split tree.

    ReLU split: its splits ``[layer, neuron, 1 (active) | 0]`` and, per neuron recorded, ``[layer,
    neuron, lower, upper, alpha, beta_upper, beta_lower]``: its input's bounds on the leaf, the
    lower slope and the multipliers of the leaf's bound. Activation split: its splits ``[layer,
    neuron, point, 1 (z >= point) | 0 (z <= point)]`` and per neuron ``[layer, neuron, slope_low,
    slope_up, beta_upper, beta_lower]``."""

    splits: list[list[int]] | list[list[float]]
    neurons: list[list[float]]


@dataclass
class ReluClauseProof:
    """One clause of a ReLU-split region: ``row`` (over the region's rows) proven positive on
    every leaf, or, with ``solver`` set, decided by that MILP solver."""

    clause: int
    row: int = -1
    leaves: list[ReluLeafRecord] = field(default_factory=list)
    solver: str | None = None

    def to_json(self) -> dict[str, object]:
        if self.solver is not None:
            return {"clause": self.clause, "solver": self.solver}
        return {"clause": self.clause, "row": self.row, "leaves": [[leaf.splits, leaf.neurons] for leaf in self.leaves]}


@dataclass
class RegionCertificate:
    """An input-split proof (``closings``), or a neuron-split proof when ``relu_clauses`` is set:
    ``method`` "relu-split" or "activation-split"; a ReLU-split one may have ``lemmas``
    (`lemmas.RootLemmas.to_json`)."""

    closings: list[Closing | TrustedClosing] = field(default_factory=list)
    relu_clauses: list[ReluClauseProof] | None = None
    method: str = "relu-split"
    lemmas: dict[str, list] | None = None

    def to_json(self) -> object:
        if self.relu_clauses is not None:
            return {"method": self.method, **(self.lemmas or {}), "clauses": [c.to_json() for c in self.relu_clauses]}
        return [[c.path, c.clauses, {"solver": c.solver}] if isinstance(c, TrustedClosing)
                else [c.path, c.clauses, c.weights, c.bounds] + ([c.slopes] if c.slopes else []) for c in self.closings]

    @property
    def trusted(self) -> int:
        """Nodes, clauses or lemmas that rest on a solver."""
        if self.relu_clauses is not None:
            lemmas = self.lemmas["lemmas"] if self.lemmas else []
            return sum(c.solver is not None for c in self.relu_clauses) + sum(len(lemma) == 5 for lemma in lemmas)
        return sum(isinstance(c, TrustedClosing) for c in self.closings)


@dataclass
class Certificate:
    onnx_sha256: str
    vnnlib_sha256: str
    regions: list[RegionCertificate]

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "onnx_sha256": self.onnx_sha256, "vnnlib_sha256": self.vnnlib_sha256,
            "regions": [r.to_json() for r in self.regions],
        }, separators=(",", ":"))

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())


def file_sha256(path: str | Path) -> str:
    """The hash of the file as given: a gzip-compressed network or property is hashed compressed,
    so a certificate names exactly the files it was made from (the same content compressed
    differently is a different file to it)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except OSError as error:
        raise InputError(path, None, f"cannot read: {error.strerror or error}") from None
    return hashlib.sha256(data).hexdigest()


def child_path(path: str, dim: int, upper_half: bool) -> str:
    return f"{path}{dim}{'R' if upper_half else 'L'}"
