"""Certify a benchmark's unsat instances: `verirepair.verify(..., certificate=...)`, then the
independent checker, per instance; prints each verdict, whether its certificate checked, how many
of its nodes, clauses or lemmas rest on a MILP solver and the checking time, then how many were
certified (and how many of those fully re-checked) and the median and maximum checking time.

    python tools/check_certificates.py --limit 20 --timeout 60
    python tools/check_certificates.py --every 7 --timeout 60    # 20 instances spread over the properties
    python tools/check_certificates.py --json results.json     # all unsat instances (139)
    python tools/check_certificates.py --only mnist_fc --timeout 60
    python tools/check_certificates.py --only eran --match SIGMOID --every 4 --timeout 60   # the sigmoid net

Instances are those of ../shared/benchmarks/<benchmark>/instances.csv (``--only``: acasxu,
mnist_fc, eran; default acasxu) whose ground truth (ground_truth.csv) is unsat, in the file's
order; ``--match TEXT``: only those whose network's file name contains TEXT (eran's sigmoid
network: ``--only eran --match SIGMOID``). Certificates go to a temporary folder, or to ``--keep DIR``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import verirepair
from verirepair.files import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def unsat_instances(folder: Path, match: str = "") -> list[tuple[Path, Path]]:
    with open(folder / "ground_truth.csv", newline="") as stream:
        truth = {(row["onnx"], row["vnnlib"]): row["result"] for row in csv.DictReader(stream)}
    with open(folder / "instances.csv", newline="") as stream:
        rows = [row[:2] for row in csv.reader(stream) if row]
    return [(folder / onnx, folder / vnnlib) for onnx, vnnlib in rows
            if truth.get((onnx, vnnlib)) == "unsat" and match in Path(onnx).name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N unsat instances (after --every)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N unsat instances")
    parser.add_argument("--every", type=int, default=1, help="only every K-th unsat instance (spread over properties)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per verification (default 60)")
    parser.add_argument("--json", help="also write the per-instance records to this file")
    parser.add_argument("--keep", type=Path, help="keep the certificates in this folder (default: a temporary one)")
    parser.add_argument("--only", default="acasxu", help="the benchmark: acasxu, mnist_fc or eran (default acasxu)")
    parser.add_argument("--folder", type=Path, help="the benchmark folder (default ../shared/benchmarks/<--only>)")
    parser.add_argument("--match", default="", help="only networks whose file name contains this (e.g. SIGMOID)")
    args = parser.parse_args(argv)
    args.folder = args.folder or BENCHMARKS / args.only
    if not (args.folder / "ground_truth.csv").exists():
        print(f"{args.folder}: no ground_truth.csv", file=sys.stderr)
        return 2
    instances = unsat_instances(args.folder, args.match)[args.skip::max(1, args.every)][:args.limit]
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for onnx_path, vnnlib_path in instances:
            certificate = folder / f"{onnx_path.stem}-{vnnlib_path.stem}.json"
            certificate.unlink(missing_ok=True)  # one left by an earlier run is not this run's
            started = time.monotonic()
            verdict = verirepair.verify(onnx_path, vnnlib_path, timeout=args.timeout, certificate=certificate)
            verify_seconds = time.monotonic() - started
            checked, message, check_seconds, trusted = False, verdict.notes[-1] if verdict.notes else "", None, 0
            if certificate.exists():
                started = time.monotonic()
                result = verirepair.check_certificate(onnx_path, vnnlib_path, certificate)
                check_seconds = time.monotonic() - started
                checked, message, trusted = result.ok, result.message, len(result.trusted)
            record = {"onnx": onnx_path.name, "vnnlib": vnnlib_path.name, "verdict": verdict.status,
                      "verify_seconds": round(verify_seconds, 2), "checked": checked, "solver_trusted": trusted,
                      "check_seconds": None if check_seconds is None else round(check_seconds, 3), "message": message}
            records.append(record)
            print(f"{onnx_path.name:36} {vnnlib_path.name:16} {verdict.status:8} checked={checked!s:5} "
                  f"trusted={trusted} check={'-' if check_seconds is None else f'{check_seconds:.3f}s'}  {message}",
                  flush=True)
    times = [r["check_seconds"] for r in records if r["checked"]]
    summary = {"certified": sum(r["checked"] for r in records), "unsat_instances": len(records),
               "fully_rechecked": sum(r["checked"] and not r["solver_trusted"] for r in records),
               "solver_trusted": sum(r["solver_trusted"] for r in records if r["checked"]),
               "check_seconds_median": statistics.median(times) if times else None,
               "check_seconds_max": max(times) if times else None}
    print(f"certified {summary['certified']}/{summary['unsat_instances']} unsat instances "
          f"({summary['fully_rechecked']} fully re-checked, {summary['solver_trusted']} solver-trusted nodes, "
          f"clauses or lemmas in the others); checking time median {summary['check_seconds_median']} s, "
          f"max {summary['check_seconds_max']} s")
    if args.json:
        atomic_write_text(args.json, json.dumps({"summary": summary, "instances": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
