"""BIRDNN repair experiments on ACAS Xu: proven after repair?, drawdown, fidelity outside, time.

    python tools/repair_birdnn_acasxu.py [--tasks n29p8,n19p7,prop2] [--prop2-nets 4 | --prop2-only 2_9,3_2]
        [--strategies birdnn-retrain,birdnn-finetune,reassure] [--budget 600] [--verify-timeout 240]
        [--json results.json]

Tasks: N2,9 / property 8, N1,9 / property 7, and property 2 on the first ``--prop2-nets`` networks
that ``ground_truth.csv`` marks sat for it. Each (task, strategy) runs the verify → repair → export →
re-verify loop (`verirepair.repair.repair_network`) with the initial counterexamples: the
verifier's own when it finds one within ``--first-verify`` seconds, else the published witness from
``counterexamples.csv`` (replayed in onnxruntime here), plus — for N1,9 / N2,9 — BIRDNN's own
counterexample set (``../shared/benchmarks/repair/birdnn``, needs h5py) when ``--birdnn-data``.

Figures, each on 100,000 held-out uniform samples drawn with a seed the repair never sees:
* proven — the complete verifier answered unsat on the exported ONNX file;
* repaired (sampled) — fraction of the originally violating box samples that are now safe;
* drawdown — fraction of the originally safe box samples whose advisory (arg-min score) changed;
* outside — fraction of samples of the ACAS Xu operating range outside the box whose advisory
  changed ("n/a" when the box is the whole range, as for property 7);
* max |Δy| — largest output change over the box samples; time — wall clock of the whole loop.
Runs on one torch thread.
The verifier gets up to 240 s per candidate: a candidate that changed few decisions leaves thin
margins, and its proof can take minutes; one given up on is followed by a candidate trained for
more margin, which changes more decisions (property 2, N2,5: with 90 s, the 0.65 % candidate was
undecided and a 3.15 % one was proven; with 240 s, the 0.65 % one was proven in 129 s).
After the proof, the loop polishes (`RepairSettings.polish_attempts`; `--no-polish` keeps the first
proven candidate), so the figures are those of the file finally written.
Anchors from the literature (sampled, not proven): VeRe 99.88% / 15.26% / 5.6 s, PRDNN 100% /
19.48% / 3.8 s, CARE 94.89% / 19.53% / 150 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from verirepair.extras import require
from verirepair.network import Network, load_network, run_onnxruntime
from verirepair.repair import RepairSettings, repair_network
from verirepair.repair.birdnn import BirdnnFinetune, BirdnnRetrain, BirdnnSettings
from verirepair.repair.sequence import birdnn_sequence
from verirepair.spec import Box, Spec, parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify

ROOT = Path(__file__).resolve().parents[1]
ACAS = ROOT.parent / "shared" / "benchmarks" / "acasxu"
BIRDNN_DATA = ROOT.parent / "shared" / "benchmarks" / "repair" / "birdnn"
# The normalised ACAS Xu operating range (the box of property 7, which covers every input).
OPERATING_RANGE = Box(np.array([-0.328422877, -0.5, -0.5, -0.5, -0.5]), np.array([0.679857769, 0.5, 0.5, 0.5, 0.5]))
HELD_OUT = 100_000
HELD_OUT_SEED = 2024


def net_path(name: str) -> Path:
    return ACAS / "onnx" / f"ACASXU_run2a_{name}_batch_2000.onnx"


def tasks(selected: list[str], prop2_nets: int, prop2_skip: int = 0, only: list[str] | None = None) -> list[tuple[str, str, int]]:
    chosen: list[tuple[str, str, int]] = []
    if "n29p8" in selected:
        chosen.append(("N2,9/p8", "2_9", 8))
    if "n19p7" in selected:
        chosen.append(("N1,9/p7", "1_9", 7))
    if "prop2" in selected:
        with open(ACAS / "ground_truth.csv") as stream:
            sat = [row["onnx"].split("run2a_")[1].split("_batch")[0] for row in csv.DictReader(stream)
                   if row["vnnlib"] == "vnnlib/prop_2.vnnlib" and row["result"] == "sat"]
        picked = [n for n in sat if n in only] if only else sat[prop2_skip:prop2_skip + prop2_nets]
        chosen += [(f"N{n.replace('_', ',')}/p2", n, 2) for n in picked]
    return chosen


def published_witness(net: str, prop: int) -> np.ndarray | None:
    with open(ACAS / "counterexamples.csv") as stream:
        for row in csv.DictReader(stream):
            if row["onnx"].endswith(f"{net}_batch_2000.onnx") and row["vnnlib"] == f"vnnlib/prop_{prop}.vnnlib":
                return np.array([float(row[f"X_{i}"]) for i in range(5)])
    return None


def birdnn_counterexamples(net: str) -> np.ndarray:
    h5py = require("h5py", "hdf5", "needed to read BIRDNN's counterexample.h5")
    folder = {"1_9": "acas_N19", "2_9": "acas_N29"}.get(net)
    if folder is None:
        return np.zeros((0, 5))
    with h5py.File(BIRDNN_DATA / folder / "data" / "counterexample.h5") as data:
        return np.unique(np.asarray(data["counterexample"], dtype=np.float64), axis=0)


def confirmed(network: Network, spec: Spec, points: np.ndarray) -> list[np.ndarray]:
    """The points onnxruntime confirms as violations (inside the box, zero tolerance)."""
    if len(points) == 0:
        return []
    outputs = run_onnxruntime(network, points)
    return [p for p, y in zip(points, outputs) if spec.violation_at(p, y)]


def advisory_figures(original: Network, repaired: Network, spec: Spec) -> dict[str, float | None]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    box = spec.regions[0].box
    inside = box.lower + rng.random((HELD_OUT, 5)) * (box.upper - box.lower)
    space = OPERATING_RANGE.lower + rng.random((2 * HELD_OUT, 5)) * (OPERATING_RANGE.upper - OPERATING_RANGE.lower)
    space = space[~np.all((space >= box.lower) & (space <= box.upper), axis=1)][:HELD_OUT]
    with torch.no_grad():
        y0, y1 = (n.forward(torch.from_numpy(inside)).numpy() for n in (original, repaired))
        o0, o1 = ((n.forward(torch.from_numpy(space)).numpy() if len(space) else None) for n in (original, repaired))
    bad0 = np.array([spec.violation_at(x, y) for x, y in zip(inside, y0)])
    bad1 = np.array([spec.violation_at(x, y) for x, y in zip(inside, y1)])
    changed = y0.argmin(axis=1) != y1.argmin(axis=1)
    return {
        "violating_before": float(bad0.mean()),
        "repaired_sampled": float((~bad1[bad0]).mean()) if bad0.any() else None,
        "violating_after": float(bad1.mean()),
        "drawdown": float(changed[~bad0].mean()),
        "outside_changed": float((o0.argmin(axis=1) != o1.argmin(axis=1)).mean()) if len(space) >= 1000 else None,
        "max_output_change": float(np.abs(y1 - y0).max()),
    }


def strategy_named(name: str, args: argparse.Namespace):
    settings = BirdnnSettings(input_space=OPERATING_RANGE, certified_weight=args.certified_weight,
                              certify_below_violation=args.certify_below_violation,
                              certified_target=args.certified_target, certified_hinge=args.certified_hinge,
                              decision_weight=args.decision_weight)
    if name == "birdnn-retrain":
        return BirdnnRetrain(settings)
    if name == "birdnn-finetune":
        return BirdnnFinetune(settings)
    if name == "birdnn":
        return birdnn_sequence(settings)
    if name == "reassure":  # patches exactly local on the whole operating range, not just the box
        from verirepair.repair.reassure import ReassureSettings, ReassureStrategy

        return ReassureStrategy(ReassureSettings(domain=OPERATING_RANGE))
    if name == "reassure-boxes":
        from verirepair.repair.reassure.boxes import BoxPatchSettings, BoxPatchStrategy

        return BoxPatchStrategy(BoxPatchSettings(domain=OPERATING_RANGE))
    raise SystemExit(f"strategy {name!r}: not one of birdnn, birdnn-retrain, birdnn-finetune, reassure, reassure-boxes")


def run_one(label: str, net: str, prop: int, strategy_name: str, args: argparse.Namespace) -> dict[str, object]:
    original = load_network(net_path(net))
    spec = parse_vnnlib(ACAS / "vnnlib" / f"prop_{prop}.vnnlib", n_inputs=5, n_outputs=5)
    started = time.monotonic()
    first = verify(original, spec, VerifySettings(timeout=args.first_verify), Deadline(args.first_verify))
    known: list[np.ndarray] = []
    if first.counterexample is not None:
        known.append(first.counterexample.x)
    else:
        witness = published_witness(net, prop)
        known += confirmed(original, spec, witness[None, :]) if witness is not None else []
    if args.birdnn_data:
        known += confirmed(original, spec, birdnn_counterexamples(net))
    if not known:
        return {"task": label, "strategy": strategy_name, "status": "no counterexample to start from"}
    path = Path(args.workdir) / f"{net}_p{prop}_{strategy_name}.onnx"
    path.unlink(missing_ok=True)
    settings = RepairSettings(budget=args.budget, verify_timeout=args.verify_timeout, output=path,
                              keep_unproven=path.with_suffix(".unproven.onnx"), decision="argmin", polish_attempts=0 if args.no_polish else RepairSettings.polish_attempts)
    report = repair_network(original, spec, strategy_named(strategy_name, args), settings, known)
    seconds = time.monotonic() - started
    row: dict[str, object] = {"task": label, "strategy": strategy_name, "status": report.status,
                              "proven": report.status == "repaired", "rounds": len(report.iterations), "seconds": seconds,
                              "initial_counterexamples": len(known),
                              "verdicts": [f"{i.verdict}:{i.decided_by}:{i.verify_seconds:.1f}s" for i in report.iterations],
                              "phases": {k: round(v, 2) for k, v in report.phase_seconds.items()},
                              "round_details": [i.details for i in report.iterations]}
    written = report.written or report.kept_unproven
    if written:
        row.update(advisory_figures(original, load_network(written), spec))
    return row


def percent(value: object) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="n29p8,n19p7,prop2")
    parser.add_argument("--prop2-nets", type=int, default=4)
    parser.add_argument("--prop2-skip", type=int, default=0, help="skip the first K networks of the prop_2 sat list")
    parser.add_argument("--prop2-only", default="", help="these networks of the prop_2 sat list instead, e.g. 2_9,3_2")
    parser.add_argument("--strategies", default="birdnn-retrain,birdnn-finetune")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per (task, strategy), verification included")
    parser.add_argument("--verify-timeout", type=float, default=240.0)
    parser.add_argument("--first-verify", type=float, default=20.0)
    parser.add_argument("--birdnn-data", action="store_true", help="add BIRDNN's counterexample sets (needs h5py)")
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--certified-weight", type=float, default=BirdnnSettings.certified_weight,
                        help="birdnn-retrain's certified-margin loss weight (0: off)")
    parser.add_argument("--certify-below-violation", type=float, default=BirdnnSettings.certify_below_violation,
                        help="birdnn-retrain: certified loss from the start when at most this fraction of the box violates")
    parser.add_argument("--certified-target", type=float, default=BirdnnSettings.certified_target)
    parser.add_argument("--certified-hinge", choices=("squared", "linear"), default=BirdnnSettings.certified_hinge)
    parser.add_argument("--decision-weight", type=float, default=BirdnnSettings.decision_weight,
                        help="birdnn-retrain: weight of the decision-keeping hinge (0: off)")
    parser.add_argument("--no-polish", action="store_true", help="keep the first proven candidate (no polishing step)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for label, net, prop in tasks(args.tasks.split(","), args.prop2_nets, args.prop2_skip,
                                  [n for n in args.prop2_only.split(",") if n]):
        for name in args.strategies.split(","):
            row = run_one(label, net, prop, name, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{'task':<10} {'strategy':<16} {'proven':<7} {'repaired(s)':>11} {'drawdown':>9} {'outside':>8} "
          f"{'max|dy|':>8} {'time':>7}  verdicts")
    for row in rows:
        print(f"{row['task']:<10} {row['strategy']:<16} {str(row.get('proven', row['status'])):<7} "
              f"{percent(row.get('repaired_sampled')):>11} {percent(row.get('drawdown')):>9} {percent(row.get('outside_changed')):>8} "
              f"{row.get('max_output_change', float('nan')):>8.4f} {row.get('seconds', float('nan')):>6.1f}s  "
              f"{' '.join(row.get('verdicts', []))}")
    for name in args.strategies.split(","):
        mine = [r for r in rows if r["strategy"] == name and "proven" in r]
        if mine:
            print(f"{name}: proven {sum(bool(r['proven']) for r in mine)}/{len(mine)}, "
                  f"median time {statistics.median(float(r['seconds']) for r in mine):.1f}s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
