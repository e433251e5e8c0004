"""Repair strategies side by side (``auto`` and the single ones): proven?, time, side effects.

    OMP_NUM_THREADS=1 .venv/bin/python tools/compare_repair.py [--budget 180] [--json out.json]
        [--strategies auto,reassure,reassure-boxes,birdnn] [--tasks shipped,acasxu]
        [--acasxu 2_1,2_9] [--acasxu-budget 300] [--decision argmax|argmin|ranking]

Tasks: the shipped violated properties (``specs/expected.csv``) and ACAS Xu property 2 on the named
networks of ``../shared/benchmarks/acasxu``, the latter with ``--domain`` = the ACAS Xu operating
range (normalised inputs) and ``--decision argmin`` (advisories are arg-min scores) unless
``--decision`` names another rule for every task.
Each (task, strategy) runs `check_and_fix` (verify → repair → export → re-verify the written ONNX)
on one torch thread. Columns, from the run's report (onnxruntime, original vs repaired file):
proven (the complete verifier answered unsat on the exported file), rounds, the wall time, "in box"
— the fraction of the property boxes' samples where the original was safe whose decision changed
(the drawdown; under ``ranking`` the order of the outputs, with the arg-max and arg-min changes in
the JSON) — and "outside" — the same on samples of the domain outside the boxes (n/c: no
domain, behaviour there not constrained), the largest |Δ output| in the box, and for ``auto`` the
member that produced the file. A strategy that does not apply (REASSURE patches need a ReLU
network) is reported with its one-line reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from repair_birdnn_acasxu import OPERATING_RANGE

from verirepair.errors import InputError
from verirepair.repair import RepairSettings, check_and_fix
from verirepair.repair.registry import strategy_named
from verirepair.spec import Box

ROOT = Path(__file__).resolve().parents[1]
ACASXU = ROOT.parent / "shared" / "benchmarks" / "acasxu"
# Classifiers decide by arg-max; the collision-avoidance model outputs scores (arg-min advisory).
DECISION = {"collision_avoidance": "argmin"}


def shipped_violated() -> list[tuple[Path, Path, str, Box | None]]:
    with (ROOT / "specs" / "expected.csv").open(newline="") as stream:
        return [(ROOT / r["onnx"], ROOT / r["vnnlib"], DECISION.get(Path(r["onnx"]).stem, "argmax"), None)
                for r in csv.DictReader(stream) if r["expected"] == "sat"]


def acasxu_property_2(networks: list[str]) -> list[tuple[Path, Path, str, Box | None]]:
    return [(ACASXU / "onnx" / f"ACASXU_run2a_{n}_batch_2000.onnx", ACASXU / "vnnlib" / "prop_2.vnnlib", "argmin",
             OPERATING_RANGE) for n in networks]


def percent(figures: object, key: str = "decision_changed") -> str:
    if not isinstance(figures, dict):
        return "-"
    if not figures.get("samples"):
        return "n/c"
    return f"{100 * float(figures[key]):.2f}%"


def run_one(onnx: Path, vnnlib: Path, decision: str, domain: Box | None, name: str, budget: float,
            workdir: Path) -> dict[str, object]:
    label = f"{onnx.stem.replace('ACASXU_run2a_', 'acasxu_').replace('_batch_2000', '')}:{vnnlib.stem}"
    row: dict[str, object] = {"task": label, "strategy": name}
    settings = RepairSettings(budget=budget, verify_timeout=budget / 3, output=workdir / f"{label}_{name}.onnx",
                              side_effect_samples=5000, decision=decision, domain=domain)
    started = time.monotonic()
    try:
        report = check_and_fix(onnx, vnnlib, strategy_named(name), settings)
    except InputError as error:
        return row | {"status": f"n/a: {error}"}
    fidelity, outside = report.side_effects.get("fidelity"), report.side_effects.get("outside")
    return row | {"status": report.status, "proven": report.proven, "rounds": len(report.iterations),
                  "seconds": round(time.monotonic() - started, 1), "in_box": percent(fidelity),
                  "outside": percent(outside), "max_abs_change": (fidelity or {}).get("max_abs_change"),
                  "in_box_argmax": percent(fidelity, "argmax_changed") if "argmax_changed" in (fidelity or {}) else None,
                  "in_box_argmin": percent(fidelity, "argmin_changed") if "argmin_changed" in (fidelity or {}) else None,
                  "produced_by": report.produced_by, "portfolio": report.portfolio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per (shipped property, strategy)")
    parser.add_argument("--acasxu-budget", type=float, default=300.0, help="seconds per (ACAS Xu task, strategy)")
    parser.add_argument("--strategies", default="auto,reassure,reassure-boxes,birdnn")
    parser.add_argument("--tasks", default="shipped,acasxu", help="shipped, acasxu or both")
    parser.add_argument("--acasxu", default="2_1", help="ACAS Xu networks for property 2, e.g. 2_1,2_9")
    parser.add_argument("--decision", choices=("argmax", "argmin", "ranking"),
                        help="judge every task by this rule (default: arg-min for the ACAS Xu-style scores, else arg-max)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tasks = shipped_violated() if "shipped" in args.tasks else []
    if "acasxu" in args.tasks:
        tasks += acasxu_property_2(args.acasxu.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for onnx, vnnlib, decision, domain in tasks:
            budget = args.budget if domain is None else args.acasxu_budget
            for name in args.strategies.split(","):
                rows.append(run_one(onnx, vnnlib, args.decision or decision, domain, name, budget, Path(workdir)))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'task':<46} {'strategy':<15} {'proven':<7} {'rounds':>6} {'time':>7} {'in box':>8} {'outside':>8} "
          f"{'max|dy|':>9}  produced by")
    for row in rows:
        if "proven" not in row:
            print(f"{row['task']:<46} {row['strategy']:<15} {row['status']}")
            continue
        largest = "-" if row["max_abs_change"] is None else f"{float(row['max_abs_change']):.3g}"
        print(f"{row['task']:<46} {row['strategy']:<15} {row['proven']!s:<7} {row['rounds']:>6} {row['seconds']:>6}s "
              f"{row['in_box']:>8} {row['outside']:>8} {largest:>9}  {row.get('produced_by') or '-'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
