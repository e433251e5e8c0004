"""VNN-COMP instance lists and ground-truth files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Instance:
    index: int
    onnx_text: str  # paths as written in the CSV (the key for ground truth)
    vnnlib_text: str
    base: Path  # the CSV's folder, which the paths are relative to
    timeout: float

    @property
    def onnx(self) -> Path:
        return _present(self.base / self.onnx_text)

    @property
    def vnnlib(self) -> Path:
        return _present(self.base / self.vnnlib_text)

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx_text, self.vnnlib_text)


def _present(path: Path) -> Path:
    """``path``, or its ``.gz`` copy when only that exists: VNN-COMP benchmark repositories ship
    networks and properties gzip-compressed while their instance lists name them uncompressed."""
    compressed = path.with_name(path.name + ".gz")
    return compressed if not path.exists() and compressed.exists() else path


def read_instances(path: str | Path) -> list[Instance]:
    """Rows ``onnx,vnnlib,timeout`` (no header), paths relative to the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    base = path.parent
    instances: list[Instance] = []
    with path.open(newline="") as stream:
        for line_number, row in enumerate(csv.reader(stream), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise InputError(path, f"line {line_number}", f"expected onnx,vnnlib,timeout, got {len(row)} fields")
            onnx_text, vnnlib_text, timeout_text = (field.strip() for field in row)
            try:
                timeout = float(timeout_text)
            except ValueError:
                raise InputError(path, f"line {line_number}", f"timeout {timeout_text!r} is not a number") from None
            instances.append(Instance(len(instances), onnx_text, vnnlib_text, base, timeout))
    return instances


GroundTruth = dict[tuple[Path, Path], str]


def read_ground_truth(path: str | Path) -> GroundTruth:
    """``(onnx, vnnlib) → result`` from a CSV with a header naming onnx, vnnlib and result; the
    paths are resolved relative to the CSV's folder (as VNN-COMP writes them), so the keys are
    the files themselves, however an instance list spells them."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file")
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = {"onnx", "vnnlib", "result"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(path, "header", f"missing columns: {', '.join(sorted(missing))}")
        return {_resolved(path.parent, row["onnx"], row["vnnlib"]): row["result"].strip() for row in reader}


def expected_results(instances: list[Instance], truth: GroundTruth) -> dict[tuple[str, str], str]:
    """The known answer of each instance that ``truth`` has, keyed by the instance's own spelling
    of its paths (`Instance.key`, what the run's records carry)."""
    expected = {}
    for instance in instances:
        result = truth.get(_resolved(instance.base, instance.onnx_text, instance.vnnlib_text))
        if result is not None:
            expected[instance.key] = result
    return expected


def _resolved(base: Path, onnx_text: str, vnnlib_text: str) -> tuple[Path, Path]:
    return (base / onnx_text.strip()).resolve(), (base / vnnlib_text.strip()).resolve()
