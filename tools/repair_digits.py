"""Repair strategies on the shipped digits classifier's violated robustness property, side by side:
proven?, wall time, held-out accuracy before/after (real labels), parameters.

    OMP_NUM_THREADS=1 .venv/bin/python tools/repair_digits.py [--strategies archrepair,birdnn]
        [--spec specs/digits_robust_0_eps0.12.vnnlib] [--budget 300] [--set NAME=NUMBER ...]

Each strategy runs `check_and_fix` (verify → repair → export → re-verify the written ONNX) on one
torch thread, with the 8×8 digits training split as ``--data`` (the inputs whose behaviour a
repair keeps). Accuracy is measured in onnxruntime on the held-out split, on the written file.
``--set`` changes a number of `ArchRepairSettings` (e.g. ``verifiable_weight=0`` turns the
verifiability term off, ``warm_logit=0`` starts the search from a uniform mixture).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from verirepair import datasets
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairSettings, check_and_fix
from verirepair.repair.archrepair import ArchRepair, ArchRepairSettings
from verirepair.repair.registry import strategy_named

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_classifier.onnx"


def accuracy(path: Path, images: datasets.LabelledImages) -> float:
    return float(np.mean(run_onnxruntime(load_network(path), images.x).argmax(axis=1) == images.y))


def parameters(path: Path) -> int:
    return int(sum(t.numel() for t in load_network(path).constants.values() if t.is_floating_point()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="archrepair,birdnn")
    parser.add_argument("--spec", default=str(ROOT / "specs" / "digits_robust_0_eps0.12.vnnlib"))
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=NUMBER")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, held_out = datasets.digits("train"), datasets.digits("held_out")
    print(f"original: held-out accuracy {accuracy(MODEL, held_out):.4f}, parameters {parameters(MODEL)}")
    for name in args.strategies.split(","):
        changed = {key: type(getattr(ArchRepairSettings(), key))(value) for key, value in (item.split("=", 1) for item in args.set)}
        strategy = ArchRepair(ArchRepairSettings(**changed)) if name == "archrepair" else strategy_named(name)
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "repaired.onnx"
            start = time.monotonic()
            report = check_and_fix(MODEL, args.spec, strategy, RepairSettings(budget=args.budget, verify_timeout=60, output=output,
                                                                              side_effect_samples=1000, data=(train.x, train.y)))
            seconds = time.monotonic() - start
            after = f"{accuracy(output, held_out):.4f}, parameters {parameters(output)}" if report.written else "-"
        print(f"{name}: {report.status} in {seconds:.1f} s, verdicts {[i.verdict for i in report.iterations]}, "
              f"held-out accuracy after {after}")
        for iteration in report.iterations:
            shown = ("block", "cell", "mixture", "parameters_added", "verifiable_shortfall", "pgd_points_added")
            print("   ", {k: v for k, v in iteration.details.items() if k in shown})


if __name__ == "__main__":
    main()
