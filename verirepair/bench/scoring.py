"""VNN-COMP 2023+ scoring and the summary table of a benchmark run."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass

from .records import InstanceRecord

CORRECT, WRONG = 10, -150


@dataclass(frozen=True)
class Summary:
    instances: int
    unsat: int
    sat: int
    wrong: int
    witness_failures: int
    undecided: int  # unknown, timeout, error
    correct: int
    median_seconds: float
    total_seconds: float
    score: int


def is_wrong(record: InstanceRecord, truth: str | None) -> bool:
    return truth in ("sat", "unsat") and record.result in ("sat", "unsat") and record.result != truth


def score_of(record: InstanceRecord, truth: str | None) -> int:
    """+10 for a correct answer, −150 for a wrong one or a sat whose witness fails the check."""
    if record.result not in ("sat", "unsat"):
        return 0
    if record.result == "sat" and not record.witness_ok:
        return WRONG
    if is_wrong(record, truth):
        return WRONG
    return CORRECT


def summarise(records: list[InstanceRecord], truth: dict[tuple[str, str], str]) -> Summary:
    decided = [r for r in records if r.result in ("sat", "unsat")]
    wrong = sum(is_wrong(r, truth.get((r.onnx, r.vnnlib))) for r in records)
    failures = sum(r.result == "sat" and not r.witness_ok for r in records)
    times = [r.seconds for r in records]
    return Summary(
        instances=len(records),
        unsat=sum(r.result == "unsat" for r in records),
        sat=sum(r.result == "sat" for r in records),
        wrong=wrong,
        witness_failures=failures,
        undecided=len(records) - len(decided),
        correct=sum(score_of(r, truth.get((r.onnx, r.vnnlib))) == CORRECT for r in records),
        median_seconds=statistics.median(times) if times else 0.0,
        total_seconds=sum(times),
        score=sum(score_of(r, truth.get((r.onnx, r.vnnlib))) for r in records),
    )


def results_csv(records: list[InstanceRecord], truth: dict[tuple[str, str], str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["onnx", "vnnlib", "result", "seconds", "decided_by", "peak_memory_mb", "witness_ok", "expected", "score"])
    for r in records:
        expected = truth.get((r.onnx, r.vnnlib), "")
        writer.writerow([r.onnx, r.vnnlib, r.result, f"{r.seconds:.3f}", r.decided_by, f"{r.peak_memory_mb:.0f}",
                         "" if r.witness_ok is None else r.witness_ok, expected, score_of(r, expected or None)])
    return buffer.getvalue()


TABLE_HEADER = f"{'benchmark':<12} {'inst':>5} {'unsat':>6} {'sat':>5} {'wrong':>6} {'cex-fail':>8} {'undecided':>9} {'median s':>9} {'total s':>9} {'score':>7}"


def table_row(name: str, summary: Summary) -> str:
    s = summary
    return (f"{name:<12} {s.instances:>5} {s.unsat:>6} {s.sat:>5} {s.wrong:>6} {s.witness_failures:>8} "
            f"{s.undecided:>9} {s.median_seconds:>9.2f} {s.total_seconds:>9.1f} {s.score:>7}")
