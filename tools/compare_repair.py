"""Repair strategies side by side on the shipped violated properties: proven?, side effects, time.

    OMP_NUM_THREADS=1 .venv/bin/python tools/compare_repair.py [--budget 180] [--json out.json]
        [--strategies reassure,birdnn-retrain,birdnn-finetune]

Each (property, strategy) runs `check_and_fix` (verify → repair → export → re-verify the written
ONNX) on one torch thread. Columns, from the run's report (onnxruntime, original vs repaired file):
proven (the complete verifier answered unsat on the exported file), rounds, parameters added,
"changed" — the fraction of the property boxes' samples where the original was safe whose decision
changed (the drawdown) — and the largest |Δ output| on them, and the wall time. A strategy that
does not apply (REASSURE patches need a ReLU network) is reported with its one-line reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch

from verirepair.errors import InputError
from verirepair.repair import RepairSettings, check_and_fix
from verirepair.repair.registry import strategy_named

ROOT = Path(__file__).resolve().parents[1]
# Classifiers decide by arg-max; the collision-avoidance model outputs scores (arg-min advisory).
DECISION = {"collision_avoidance": "argmin"}


def violated_properties() -> list[tuple[Path, Path]]:
    with (ROOT / "specs" / "expected.csv").open(newline="") as stream:
        return [(ROOT / r["onnx"], ROOT / r["vnnlib"]) for r in csv.DictReader(stream) if r["expected"] == "sat"]


def run_one(onnx: Path, vnnlib: Path, name: str, budget: float, workdir: Path) -> dict[str, object]:
    row: dict[str, object] = {"property": vnnlib.stem, "strategy": name}
    settings = RepairSettings(budget=budget, verify_timeout=budget / 3, output=workdir / f"{vnnlib.stem}_{name}.onnx",
                              side_effect_samples=5000, decision=DECISION.get(onnx.stem, "argmax"))
    started = time.monotonic()
    try:
        report = check_and_fix(onnx, vnnlib, strategy_named(name), settings)
    except InputError as error:
        return row | {"status": f"n/a: {error}"}
    fidelity = report.side_effects.get("fidelity", {})
    assert isinstance(fidelity, dict)
    return row | {"status": report.status, "proven": report.proven, "rounds": len(report.iterations),
                  "parameters_added": report.parameters_added, "changed": fidelity.get("decision_changed"),
                  "max_abs_change": fidelity.get("max_abs_change"), "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per (property, strategy)")
    parser.add_argument("--strategies", default="reassure,birdnn-retrain,birdnn-finetune")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for onnx, vnnlib in violated_properties():
            for name in args.strategies.split(","):
                rows.append(run_one(onnx, vnnlib, name, args.budget, Path(workdir)))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'property':<36} {'strategy':<16} {'proven':<7} {'rounds':>6} {'params+':>8} {'changed':>8} "
          f"{'max|dy|':>9} {'time':>7}")
    for row in rows:
        if "proven" not in row:
            print(f"{row['property']:<36} {row['strategy']:<16} {row['status']}")
            continue
        changed = "-" if row["changed"] is None else f"{100 * float(row['changed']):.2f}%"
        largest = "-" if row["max_abs_change"] is None else f"{float(row['max_abs_change']):.3g}"
        print(f"{row['property']:<36} {row['strategy']:<16} {str(row['proven']):<7} {row['rounds']:>6} "
              f"{row['parameters_added']:>8} {changed:>8} {largest:>9} {row['seconds']:>6}s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
