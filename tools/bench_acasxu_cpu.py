"""CPU time of the verifier on chosen ACAS Xu instances under two `VerifySettings` variants,
measured in one process, the variants' runs interleaved, so that both see the same machine.

    OMP_NUM_THREADS=1 python tools/bench_acasxu_cpu.py --runs 3 \
        --variant old:root_alpha_before_input_split=true,surrogate_before_input_split=true --variant new

Each run is a fresh `verify` with a deadline on this process's CPU time (`time.process_time`), so a
loaded, shared machine changes the figures little; the import check and the falsification are
part of the time, as in `verirepair verify`. Prints per instance the verdicts, the median CPU
seconds of each variant and the ratio new / old (the last variant over the first), then the sums.
``--instances`` picks others (``NET:PROP`` such as ``4_2:2``); the default list is the slowest
instances of a full run and a sample of typical ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from ablate_verify import parse_variant

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verirepair.verify import VerifySettings, verify
from verirepair.verify.deadline import Deadline
from verirepair.verify.pipeline import load_problem

ACASXU = ROOT.parent / "shared" / "benchmarks" / "acasxu"
SLOWEST = ("4_2:2", "3_3:2", "1_1:6", "3_3:9", "5_3:2", "2_9:8")
TYPICAL = ("1_1:1", "3_5:1", "2_7:1", "4_4:4", "5_8:4", "1_6:3", "2_4:3", "3_2:2", "1_2:2", "1_9:7")


def run_once(onnx: Path, vnnlib: Path, settings: VerifySettings) -> tuple[str, float]:
    started = time.process_time()
    network, spec = load_problem(onnx, vnnlib, settings)
    verdict = verify(network, spec, settings, Deadline(settings.timeout, time.process_time))
    return verdict.status, time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", nargs="*", default=list(SLOWEST + TYPICAL), help="NET:PROP, e.g. 4_2:2")
    parser.add_argument("--variant", action="append", help="NAME or NAME:setting=value,... (default: old, new)")
    parser.add_argument("--runs", type=int, default=3, help="runs per instance and variant (median taken)")
    parser.add_argument("--timeout", type=float, default=116.0, help="CPU seconds per run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = [parse_variant(text) for text in (args.variant or ["old:root_alpha_before_input_split=true,surrogate_before_input_split=true", "new"])]
    totals = {name: 0.0 for name, _ in variants}
    print(f"{'instance':10s} " + " ".join(f"{name + ' verdict':>14s} {name + ' cpu s':>10s}" for name, _ in variants)
          + f" {'ratio':>6s}", flush=True)
    for item in args.instances:
        net, prop = item.split(":")
        onnx = ACASXU / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx"
        vnnlib = ACASXU / "vnnlib" / f"prop_{prop}.vnnlib"
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        verdicts: dict[str, set[str]] = {name: set() for name, _ in variants}
        for _ in range(args.runs):
            for name, changes in variants:
                status, seconds = run_once(onnx, vnnlib, VerifySettings(timeout=args.timeout, **changes))  # type: ignore[arg-type]
                times[name].append(seconds)
                verdicts[name].add(status)
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, value in medians.items():
            totals[name] += value
        first, last = variants[0][0], variants[-1][0]
        print(f"{item:10s} " + " ".join(f"{'/'.join(sorted(verdicts[name])):>14s} {medians[name]:10.2f}" for name, _ in variants)
              + f" {medians[last] / medians[first]:6.2f}", flush=True)
    first, last = variants[0][0], variants[-1][0]
    print(f"{'sum':10s} " + " ".join(f"{'':>14s} {totals[name]:10.2f}" for name, _ in variants)
          + f" {totals[last] / totals[first]:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
