"""The checker's own reader of the certificate format (``verirepair-certificate-1``).

A JSON object ``{"format", "onnx_sha256", "vnnlib_sha256", "regions"}``; ``regions`` holds, per
region of the property, a list of closings ``[path, clauses, weights, bounds]``: the node's path
in the split tree (steps ``<dim><L|R>``), the clauses closed there, per clause the row weights over
the region's rows, and per ReLU layer the recorded ``[lower, upper]`` pre-activation bounds.
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

    @property
    def path(self) -> str:
        return "".join(f"{dim}{'R' if upper else 'L'}" for dim, upper in self.steps) or "(root)"


@dataclass(frozen=True)
class CertificateFile:
    onnx_sha256: str
    vnnlib_sha256: str
    regions: tuple[tuple[Closing, ...], ...]


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
    parsed = []
    for r, region in enumerate(regions):
        if not isinstance(region, list):
            raise MalformedCertificate(f"region {r} is not a list of closings")
        parsed.append(tuple(_closing(item, f"region {r}, closing {c}") for c, item in enumerate(region)))
    return CertificateFile(hashes[0], hashes[1], tuple(parsed))


def _closing(item: object, where: str) -> Closing:
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedCertificate(f"{where}: not [path, clauses, weights, bounds]")
    path, clauses, weights, bounds = item
    if not isinstance(path, str) or not _PATH.match(path):
        raise MalformedCertificate(f"{where}: malformed node path {path!r}")
    steps = tuple((int(dim), side == "R") for dim, side in _STEP.findall(path))
    if not isinstance(clauses, list) or not all(type(k) is int and k >= 0 for k in clauses) \
            or len(set(clauses)) != len(clauses):
        raise MalformedCertificate(f"{where}: clauses are not distinct non-negative integers")
    if not isinstance(weights, list) or len(weights) != len(clauses):
        raise MalformedCertificate(f"{where}: not one weight vector per clause")
    if not isinstance(bounds, list) or not all(isinstance(layer, list) and len(layer) == 2 for layer in bounds):
        raise MalformedCertificate(f"{where}: bounds are not [lower, upper] per layer")
    return Closing(steps, tuple(clauses), tuple(_numbers(w, where) for w in weights),
                   tuple((_numbers(lower, where), _numbers(upper, where)) for lower, upper in bounds))


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
