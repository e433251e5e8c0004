"""Peers' VNN-COMP results (``peers_results.csv`` beside a benchmark's instances.csv): one row per
year and tool with aggregate columns only (instances, solved_correct, median_time_correct_s, ...)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .plots import PeerMark

REQUIRED = ("year", "tool", "instances", "solved_correct", "median_time_correct_s")


@dataclass(frozen=True)
class PeerResult:
    year: int
    tool: str
    instances: int
    unsat: int
    sat: int
    solved_correct: int
    median_seconds: float | None

    def mark(self) -> PeerMark:
        share = 100.0 * self.solved_correct / self.instances if self.instances else 0.0
        return PeerMark(f"{self.tool} {self.year}", share, self.median_seconds)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "n/a") else None
    except ValueError:
        return None


def read_peers(path: Path) -> list[PeerResult]:
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    if rows and any(name not in rows[0] for name in REQUIRED):
        raise InputError(path, None, f"expected the columns {', '.join(REQUIRED)}")
    return [PeerResult(int(row["year"]), row["tool"], int(row["instances"]), int(_number(row.get("unsat")) or 0),
                       int(_number(row.get("sat")) or 0), int(row["solved_correct"]),
                       _number(row["median_time_correct_s"])) for row in rows]


def latest_year(peers: list[PeerResult]) -> list[PeerResult]:
    """The rows of the most recent year that solved anything, best first."""
    active = [p for p in peers if p.solved_correct > 0]
    if not active:
        return []
    year = max(p.year for p in active)
    return sorted((p for p in active if p.year == year), key=lambda p: -p.solved_correct)
