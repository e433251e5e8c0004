"""ACAS Xu check-and-fix with REASSURE: property 2 on violating networks, N2,9 property 8.

Prints one line per instance: verdict before/after, iterations, regions patched, parameters added,
seconds per phase and the drawdown (fraction of originally safe domain samples whose advisory
changed) on --samples uniform samples of the property's box.

    .venv/bin/python tools/repair_acas.py [--nets 1_2 1_3 ...] [--prop 2] [--budget 600] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from verirepair.repair import RepairSettings, check_and_fix, strategy_named

ACAS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "acasxu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["1_2", "1_3", "1_4", "1_5", "1_6"])
    parser.add_argument("--prop", default="2")
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--verify-timeout", type=float, default=300.0)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--out", default="repair-out/acas")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for net in args.nets:
        onnx_path = ACAS / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx"
        spec = ACAS / "vnnlib" / f"prop_{args.prop}.vnnlib"
        settings = RepairSettings(budget=args.budget, verify_timeout=args.verify_timeout,
                                  output=out / f"N{net}_prop{args.prop}_repaired.onnx",
                                  keep_unproven=out / f"N{net}_prop{args.prop}_unproven.onnx",
                                  side_effect_samples=args.samples, decision="argmin")
        report = check_and_fix(onnx_path, spec, strategy_named("reassure"), settings)
        report.write_json(out / f"N{net}_prop{args.prop}_report.json")
        print(report.summary(), flush=True)


if __name__ == "__main__":
    main()
