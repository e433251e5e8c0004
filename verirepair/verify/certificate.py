"""Proof certificates for `unsat` answers of input-split branch and bound.

A certificate lists, per region of the spec, the nodes of the split tree where clauses were
closed: a node is a path from the root box (steps ``<dim><L|R>``: halve dimension ``dim`` at its
midpoint and keep the lower or upper half) plus, for each clause closed there, the row weights
``λ`` whose combination was proven positive on the node's box. `certificate_check` re-checks
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
    the checker confirms each of them (see `certificate_check`) before relying on it.
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


def read_certificate(path: str | Path) -> Certificate:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        regions = [RegionCertificate([Closing(str(p), [int(k) for k in cs], [[float(v) for v in w] for w in ws],
                                              [[[float(v) for v in side] for side in layer] for layer in bs])
                                      for p, cs, ws, bs in region]) for region in data["regions"]]
        return Certificate(str(data["onnx_sha256"]), str(data["vnnlib_sha256"]), regions)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(path, None, f"not a verirepair certificate ({error})") from None


def child_path(path: str, dim: int, upper_half: bool) -> str:
    return f"{path}{dim}{'R' if upper_half else 'L'}"


def parse_path(path: str) -> list[tuple[int, bool]]:
    """``"2L0R"`` → [(2, False), (0, True)]; raises ValueError on malformed text."""
    if len(path) % 2:
        raise ValueError(f"malformed node path {path!r}")
    steps = []
    for i in range(0, len(path), 2):
        dim, side = path[i], path[i + 1]
        if not dim.isdigit() or side not in "LR":
            raise ValueError(f"malformed node path {path!r}")
        steps.append((int(dim), side == "R"))
    return steps
