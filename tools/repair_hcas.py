"""HCAS experiments with REASSURE (data: ../shared/benchmarks/repair/reassure, see its README).

Semantics: REASSURE's HCAS loader keeps only the weights and feeds raw-scale points (ft, rad).
To reproduce its experiments the network is converted with ``--normalize normalized`` (weights
only) and fed the raw points, as REASSURE did; the training data (.h5, normalised inputs) is fed
as stored. Both choices are REASSURE's, not the .nnet format's own semantics.

    point-wise (pra1 tau05, the 50 shipped counterexamples, label 4, domain |x|,|y|<=65000, |psi|<=pi):
        .venv/bin/python tools/repair_hcas.py points [--count 50]
    area (pra1 tau20, x,y in [0,5000], psi in [-pi,-pi/2], label 4): enumeration of the box's
    linear regions, count of buggy ones, then check-and-fix on the box (budget in seconds):
        .venv/bin/python tools/repair_hcas.py area [--budget 1800] [--enumerate-only]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import onnx

from verirepair.network import load_network
from verirepair.network.nnet import nnet_to_onnx, read_nnet
from verirepair.repair import RepairSettings, check_and_fix, label_spec, repair_points
from verirepair.repair.data import load_data
from verirepair.repair.reassure import ReassureSettings, ReassureStrategy
from verirepair.repair.reassure.boxes import BoxPatchSettings, BoxPatchStrategy
from verirepair.repair.reassure.enumerate import enumerate_regions, region_violation
from verirepair.repair.reassure.regions import pattern_key, relu_network_of
from verirepair.spec import write_vnnlib
from verirepair.verify import Deadline

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "repair" / "reassure" / "hcas"
LABEL = 4


def _network(tau: str, out: Path) -> Path:
    nnet = read_nnet(DATA / "nnet" / f"HCAS_rect_v6_pra1_tau{tau}_25HU_3000.nnet")
    path = out / f"hcas_pra1_tau{tau}_weights_only.onnx"
    onnx.save(nnet_to_onnx(nnet, "normalized"), path)
    return path


def points(args: argparse.Namespace, out: Path) -> None:
    network = _network("05", out)
    cex = np.load(DATA / "data" / "cex_pra1_tau05.npy").astype(np.float64)[: args.count]
    settings = RepairSettings(budget=args.budget, output=out / f"hcas_tau05_points{args.count}.onnx",
                              side_effect_samples=args.samples,
                              data=load_data(DATA / "data" / "HCAS_rect_TrainingData_v6_pra1_tau05.h5"), decision="argmax")
    lower, upper = np.array([-65000, -65000, -math.pi]), np.array([65000, 65000, math.pi])
    report = repair_points(network, cex, LABEL, ReassureStrategy(), settings, lower, upper)
    report.write_json(out / f"hcas_tau05_points{args.count}_report.json")
    print(report.summary())


def area(args: argparse.Namespace, out: Path) -> None:
    network = _network("20", out)
    lower, upper = np.array([0.0, 0.0, -math.pi]), np.array([5000.0, 5000.0, -math.pi / 2])
    relu = relu_network_of(load_network(network))
    started = time.monotonic()
    regions, complete = enumerate_regions(relu, lower, upper, Deadline(args.enumerate_budget))
    spec = label_spec(3, 5, LABEL, lower, upper)
    clauses = [(c.A, c.b) for c in spec.regions[0].clauses]
    buggy = [r for r in regions if any(region_violation(r, A, b, 0.0) is not None for A, b in clauses)]
    shipped = np.load(DATA / "data" / "all_linear_regions_converted.npz")
    theirs = {pattern_key(p) for p in shipped["patterns"].reshape(len(shipped["patterns"]), -1).astype(bool)}
    ours = {r.key for r in regions}
    print(f"enumeration: {len(regions)} regions ({'complete' if complete else 'cut short'}) in "
          f"{time.monotonic() - started:.0f}s, {len(buggy)} buggy; REASSURE's list: {len(theirs)} regions, "
          f"{len(theirs & ours)} of them found here", flush=True)
    if args.enumerate_only:
        return
    spec_path = out / "hcas_tau20_box_label4.vnnlib"
    write_vnnlib(spec, spec_path)
    settings = RepairSettings(budget=args.budget, verify_timeout=args.budget, output=out / "hcas_tau20_area.onnx",
                              side_effect_samples=args.samples,
                              data=load_data(DATA / "data" / "HCAS_rect_TrainingData_v6_pra1_tau20.h5"), decision="argmax")
    if args.strategy == "reassure-boxes":
        strategy = BoxPatchStrategy(BoxPatchSettings(max_boxes=args.max_boxes))
    else:
        strategy = ReassureStrategy(ReassureSettings(localise="enumerate", enumerate_max_regions=100_000))
    report = check_and_fix(network, spec_path, strategy, settings)
    report.write_json(out / "hcas_tau20_area_report.json")
    print(report.summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("points", "area"))
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--budget", type=float, default=1800.0)
    parser.add_argument("--enumerate-budget", type=float, default=1800.0)
    parser.add_argument("--enumerate-only", action="store_true")
    parser.add_argument("--strategy", choices=("reassure", "reassure-boxes"), default="reassure",
                        help="area: patches on exact linear regions, or on the boxes input split cannot prove")
    parser.add_argument("--max-boxes", type=int, default=BoxPatchSettings.max_boxes)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--out", default="repair-out/hcas")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (points if args.experiment == "points" else area)(args, out)


if __name__ == "__main__":
    main()
