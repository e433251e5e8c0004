"""Run `verirepair bench` on each VNN-COMP folder of ../shared/benchmarks and print one table.

    python tools/bench_vnncomp.py                          # acasxu, mnist_fc, verivital, eran; their own timeouts
    python tools/bench_vnncomp.py --only collins_rul_cnn --workers 2   # or oval21, sri_resnet_a
    python tools/bench_vnncomp.py --only acasxu --timeout 60 --workers 2
    python tools/bench_vnncomp.py --only mnist_fc --milp-solver highs   # HiGHS only, no Gurobi

Per-instance results and results.csv go to bench-out/<folder>/ (rerunning resumes). Ctrl-C or
SIGTERM is passed on to the running `verirepair bench`, which stops its instances cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from verirepair.bench import (
    TABLE_HEADER,
    InstanceRecord,
    expected_results,
    read_ground_truth,
    read_instances,
    summarise,
    table_row,
)
from verirepair.cli import MILP_SOLVERS

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
FOLDERS = ("acasxu", "mnist_fc", "verivital", "eran")  # the default run
OTHER_FOLDERS = ("collins_rul_cnn", "oval21", "sri_resnet_a")  # by --only


def _run_passing_signals_on(command: list[str]) -> int:
    """Run ``command`` to its end; SIGINT and SIGTERM sent to this script go to it instead, and
    are waited for, so that it can stop its instances and keep its records right."""
    child = subprocess.Popen(command)
    previous = {signum: signal.signal(signum, lambda signum, _frame: child.send_signal(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(FOLDERS), choices=FOLDERS + OTHER_FOLDERS)
    parser.add_argument("--timeout", type=float, help="override every instance's timeout (seconds)")
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="math threads per instance (default: cores / workers)")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto, for every instance")
    parser.add_argument("--milp-solver", default="auto", choices=MILP_SOLVERS,
                        help="MILP/LP back end for every instance (as `verirepair verify --milp-solver`)")
    args = parser.parse_args()
    if not BENCHMARKS.is_dir():
        print(f"benchmarks folder not found: {BENCHMARKS}", file=sys.stderr)
        return 2
    rows = []
    for folder in args.only:
        base = BENCHMARKS / folder
        out = Path(args.out) / folder
        command = [sys.executable, "-m", "verirepair", "bench", str(base / "instances.csv"),
                   "--ground-truth", str(base / "ground_truth.csv"), "--out", str(out),
                   "--workers", str(args.workers), "--timeout-scale", str(args.timeout_scale),
                   "--device", args.device, "--milp-solver", args.milp_solver]
        if args.timeout:
            command += ["--timeout", str(args.timeout)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        code = _run_passing_signals_on(command)
        if code != 0:
            return code
        records = [InstanceRecord(**json.loads(p.read_text())) for p in sorted(out.glob("*.json"))]
        instances = read_instances(base / "instances.csv")
        wanted = {i.key for i in instances}
        records = [r for r in records if (r.onnx, r.vnnlib) in wanted]
        truth = expected_results(instances, read_ground_truth(base / "ground_truth.csv"))
        rows.append(table_row(folder, summarise(records, truth)))
    print()
    print(TABLE_HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
