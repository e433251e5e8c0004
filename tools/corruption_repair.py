"""Corruption repair (ArchRepair's RQ2) on the MNIST CNN: repair with the failures of one corruption,
measure accuracy on every corruption and on clean digits, before and after.

    OMP_NUM_THREADS=1 .venv/bin/python tools/corruption_repair.py [--corruption fog]
        [--strategies archrepair,inner] [--points 40] [--eps 0.01] [--budget 300]
        [--verify-timeout 10] [--network models/mnist_cnn.onnx] [--json out.json] [--set NAME=NUMBER ...]

Corruptions (numpy and scipy only, fixed seeds; images in [0, 1], clipped), `corrupted`:

* ``noise``: Gaussian noise of standard deviation 0.4 on every pixel;
* ``blur``: Gaussian blur of standard deviation 1.5 pixels (``scipy.ndimage.gaussian_filter``);
* ``contrast``: contrast cut to a quarter around each image's mean;
* ``fog``: a haze blended in, 0.55 × a smooth random field (Gaussian-filtered noise of standard
  deviation 4 pixels, scaled to [0, 1]) + 0.45 × the image.

The repair set: the clean training digits (``data``: the strategies keep the original's
behaviour on them) and, as the properties, the first ``--points`` corrupted training digits (of
``--corruption``) that the network gets wrong, each an L∞ robustness property (box of ``--eps``
around the corrupted digit, clipped to [0, 1]; violated where another digit's output is >= the
true label's). Every strategy runs `verirepair.check_and_fix` on that suite, so a written file is
proven on every point; accuracy is then measured in onnxruntime on the 1,000 held-out digits,
clean and under each corruption (corrupted with other seeds than the training digits), on the
written file, or on the run's last unproven candidate (marked ``*``). ``--set`` changes
`ArchRepairSettings` numbers for the ``archrepair`` run (as in ``tools/repair_suites.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from attack_success import IMAGE_SIDE, predicted_labels
from repair_suites import (
    archrepair_changes,
    parameters_changed,
    repair_with,
    round_summary,
)
from scipy import ndimage

from verirepair import datasets
from verirepair.repair.pointwise import label_spec
from verirepair.spec.model import Spec

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
TRAIN_SEED, HELD_OUT_SEED = 1, 2


def _images(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, 0.4, size=x.shape)


def blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(_images(x), sigma=(0.0, 1.5, 1.5)).reshape(x.shape)


def contrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=1, keepdims=True)
    return mean + 0.25 * (x - mean)


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(len(x), IMAGE_SIDE, IMAGE_SIDE)), sigma=(0.0, 4.0, 4.0))
    low, high = field.min(axis=(1, 2), keepdims=True), field.max(axis=(1, 2), keepdims=True)
    haze = ((field - low) / np.maximum(high - low, 1e-12)).reshape(x.shape)
    return 0.45 * x + 0.55 * haze


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": noise, "blur": blur, "contrast": contrast, "fog": fog}


def corrupted(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """``x`` [n, 784] in [0, 1] under corruption ``kind``, clipped to [0, 1]."""
    return np.clip(CORRUPTIONS[kind](np.asarray(x, dtype=np.float64), np.random.default_rng(seed)), 0.0, 1.0)


def point_property(x: np.ndarray, label: int, eps: float, name: str) -> Spec:
    """L∞ robustness of ``x`` (class ``label``) at ``eps``, inside the pixel range [0, 1]."""
    return label_spec(len(x), CLASSES, label, np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0), name)


def repair_points(network: Path, train: datasets.LabelledImages, kind: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` corrupted training digits the network gets wrong, and their labels."""
    x = corrupted(train.x, kind, TRAIN_SEED)
    wrong = np.flatnonzero(predicted_labels(network, x) != train.y)[:count]
    return x[wrong], train.y[wrong]


def accuracies(onnx_path: Path, held_out: datasets.LabelledImages) -> dict[str, float]:
    """Held-out accuracy on clean digits and under every corruption."""
    figures = {"clean": float(np.mean(predicted_labels(onnx_path, held_out.x) == held_out.y))}
    for kind in CORRUPTIONS:
        x = corrupted(held_out.x, kind, HELD_OUT_SEED)
        figures[kind] = float(np.mean(predicted_labels(onnx_path, x) == held_out.y))
    return figures


def run_one(network: Path, specs: list[Spec], strategy: str, args: argparse.Namespace, data: Path, workdir: Path,
            held_out: datasets.LabelledImages) -> dict[str, object]:
    output, kept = workdir / f"{strategy}.onnx", workdir / f"{strategy}_unproven.onnx"
    started = time.monotonic()
    report = repair_with(network, specs, strategy, archrepair_changes(args.set), data, output=output, budget=args.budget,
                         verify_timeout=args.verify_timeout, keep_unproven=kept)
    row: dict[str, object] = {"strategy": strategy, "status": report.status, "proven": report.proven,
                              "seconds": round(time.monotonic() - started, 1), "suite_totals": report.suite,
                              "rounds": len(report.iterations), "notes": report.notes, "phase_seconds": report.phase_seconds,
                              "iterations": [round_summary(i) for i in report.iterations]}
    candidate = output if report.written else kept if report.kept_unproven else None
    if candidate is not None:
        changed, added = parameters_changed(network, candidate)
        row |= {"after_file": "written" if report.written else "last unproven candidate",
                "after": accuracies(candidate, held_out), "parameters_changed": changed, "parameters_added": added}
    return row


def print_table(before: dict[str, float], rows: list[dict[str, object]]) -> None:
    kinds = ["clean", *CORRUPTIONS]
    print(f"\n{'network':<14} {'proven':>9} " + " ".join(f"{k:>9}" for k in kinds) + f" {'changed (+added)':>17} {'time':>7}")
    print(f"{'original':<14} {'':>9} " + " ".join(f"{100 * before[k]:>8.1f}%" for k in kinds))
    for row in rows:
        totals, after = row["suite_totals"], row.get("after")
        mark = "" if row.get("after_file") == "written" else "*"
        cells = " ".join(f"{100 * after[k]:>8.1f}{mark or '%'}" for k in kinds) if isinstance(after, dict) else "-"
        changed = f"{row['parameters_changed']} (+{row['parameters_added']})" if "parameters_changed" in row else "-"
        print(f"{row['strategy']:<14} {totals['proven_after']:>4}/{totals['properties']:<4} {cells} {changed:>17} "
              f"{row['seconds']:>6}s  {row['status']}")
    print("* measured on the run's last (unproven) candidate; nothing was written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, default=ROOT / "models" / "mnist_cnn.onnx")
    parser.add_argument("--corruption", choices=sorted(CORRUPTIONS), default="fog")
    parser.add_argument("--strategies", default="archrepair,inner")
    parser.add_argument("--points", type=int, default=40, help="corrupted training digits the network gets wrong, as properties")
    parser.add_argument("--eps", type=float, default=0.01, help="L-infinity radius of each point's box")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per strategy")
    parser.add_argument("--verify-timeout", type=float, default=10.0, help="seconds per verification")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=NUMBER", help="an ArchRepairSettings number")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    train, held_out = datasets.mnist("train"), datasets.mnist("held_out")
    before = accuracies(args.network, held_out)
    x, y = repair_points(args.network, train, args.corruption, args.points)
    specs = [point_property(point, int(label), args.eps, f"{args.corruption} training digit {k}")
             for k, (point, label) in enumerate(zip(x, y))]
    print(json.dumps({"network": args.network.name, "corruption": args.corruption, "points": len(specs), "before": before}),
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "mnist_train.npz"
        np.savez(data, X=train.x, y=train.y)
        for strategy in args.strategies.split(","):
            rows.append(run_one(args.network, specs, strategy, args, data, Path(workdir), held_out))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "iterations"}), flush=True)
    print_table(before, rows)
    if args.json:
        args.json.write_text(json.dumps({"network": args.network.name, "corruption": args.corruption, "points": len(specs),
                                         "eps": args.eps, "budget": args.budget, "before": before, "runs": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
