"""Per-instance records of a benchmark run, one ``.json`` file each in the output folder.

A record marks its instance finished: a rerun (local or on Ray) skips every instance that has
one, which is how an interrupted run resumes. The instance's VNN-COMP results file, when the
verifier wrote one, sits beside it as ``.txt``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import atomic_write_text
from .instances import Instance


@dataclass(frozen=True)
class InstanceRecord:
    index: int
    onnx: str
    vnnlib: str
    result: str
    seconds: float
    decided_by: str
    peak_memory_mb: float
    witness_ok: bool | None  # for sat: the independent VNN-COMP check at zero tolerance; None otherwise


@dataclass(frozen=True)
class InstanceOutcome:
    """What running one instance gave: its record and the text of its results file (None when
    the verifier wrote none: a crash, a kill at the hard limit)."""

    record: InstanceRecord
    results_text: str | None


def instance_stem(instance: Instance) -> str:
    onnx, vnnlib = Path(instance.onnx_text).stem, Path(instance.vnnlib_text).stem
    return f"{instance.index:04d}_{onnx}_{vnnlib}"


def finished_records(instances: list[Instance], out: Path) -> tuple[dict[int, InstanceRecord], list[Instance]]:
    """The records already in ``out`` by instance index, and the instances that still need a run."""
    records: dict[int, InstanceRecord] = {}
    pending = []
    for instance in instances:
        done = out / f"{instance_stem(instance)}.json"
        if done.exists():
            records[instance.index] = InstanceRecord(**json.loads(done.read_text()))
        else:
            pending.append(instance)
    return records, pending


def save_outcome(out: Path, instance: Instance, outcome: InstanceOutcome) -> None:
    """Write the results file, then the record (last: its presence means finished)."""
    stem = instance_stem(instance)
    if outcome.results_text is not None:
        atomic_write_text(out / f"{stem}.txt", outcome.results_text)
    atomic_write_text(out / f"{stem}.json", json.dumps(asdict(outcome.record)))
