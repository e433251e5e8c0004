"""Proof certificates for `unsat` answers of input-split branch and bound.

A certificate lists, per region of the spec, the nodes of the split tree where clauses were
closed: a node is a path from the root box (steps ``<dim><L|R>``: halve dimension ``dim`` at its
midpoint and keep the lower or upper half) plus, for each clause closed there, the row weights
``λ`` whose combination was proven positive on the node's box. `verirepair.checker` re-checks
every node with an independent implementation and checks that, for every clause, the closing
nodes cover the region's box.
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

    ``bounds`` are the verifier's pre-activation bounds of every hidden layer on the node's box;
    the checker (`verirepair.checker`) uses the looser of each and its own derivation.
    """

    path: str
    clauses: list[int]
    weights: list[list[float]]  # per closed clause, λ over the region's rows
    bounds: list[list[list[float]]]  # per hidden layer, [lower, upper]



@dataclass
class RegionCertificate:
    closings: list[Closing] = field(default_factory=list)


@dataclass
class Certificate:
    onnx_sha256: str
    vnnlib_sha256: str
    regions: list[RegionCertificate]

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "onnx_sha256": self.onnx_sha256, "vnnlib_sha256": self.vnnlib_sha256,
            "regions": [[[c.path, c.clauses, c.weights, c.bounds] for c in r.closings] for r in self.regions],
        })

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
