"""MNIST 784-256-256-10 point-wise repair with REASSURE (data: ../shared/benchmarks/repair/reassure).

REASSURE's own experiment repairs the first N misclassified MNIST test images, each to its true
label; the MNIST data set is not shipped (see the data README). What the shared benchmarks do ship:

* buggy inputs: the 100 REASSURE watermark images, each with REASSURE's required label
  (``label - 1``, 9 for 0). They are stored at 1/255 of the pixel scale (max 1/255); they are
  multiplied by 255 here so that they are images on the MNIST model's input scale ([0, 1],
  torchvision ``ToTensor``, no normalisation). The first N images are repaired, as REASSURE's
  watermark experiment does; the ones the model already labels right count as fixed only if
  they stay so.
* test inputs: the MNIST test images inside the shipped VNN-LIB specs (mnist_fc, eran,
  verivital: 107 distinct images with their labels). Each spec's box is the image ± ε clipped to
  [0, 1], so the image is ``lower + ε`` where ``lower > 0`` and ``upper - ε`` elsewhere.

Per count it reports, from onnxruntime on the written ONNX file: the success rate, the output
change on the test images (max over images of the logit change, L∞ and L2 — the worst case —
and REASSURE's figures: the *mean* over images of the L∞ and L2 change of the softmax), the
fraction of test decisions changed, accuracy before/after, parameters added and wall time
(one thread). Domain [0, 1]^784, as REASSURE's MNIST experiment. The repaired file runs its
layers in float64 (see `reassure/export.py`), the original in float32: a logit change of about
1e-5 on every image is that rounding, not the patches.

    OMP_NUM_THREADS=1 .venv/bin/python tools/repair_mnist.py [--counts 10 20 50 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from verirepair.network import load_network, run_onnxruntime
from verirepair.network.nnet import NNet, nnet_to_onnx
from verirepair.repair import RepairSettings, repair_points
from verirepair.repair.reassure import ReassureStrategy
from verirepair.spec import parse_vnnlib

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
DATA = BENCHMARKS / "repair" / "reassure"
SPEC_GLOBS = ("mnist_fc/vnnlib/*.vnnlib", "eran/vnnlib/*.vnnlib", "verivital/vnnlib/*/*.vnnlib")
PIXELS = 784
# A recovered pixel must lie this close to a multiple of 1/255 (MNIST's 8-bit pixels), else the
# spec is not an image ± ε box and is skipped.
PIXEL_TOLERANCE = 1e-4


def mnist_network(out: Path) -> Path:
    """REASSURE's target model (torch ``Linear`` layout) as a float32 ONNX MLP."""
    state = np.load(DATA / "mnist" / "target_model_state_dict.npz")
    weights = tuple(state[f"layers.{i}.weight"].astype(np.float64) for i in range(3))
    biases = tuple(state[f"layers.{i}.bias"].astype(np.float64) for i in range(3))
    zeros, ones = np.zeros(PIXELS), np.ones(PIXELS)
    path = out / "mnist_784_256_256_10.onnx"
    onnx.save(nnet_to_onnx(NNet(weights, biases, zeros, ones, zeros, ones, 0.0, 1.0), "normalized"), path)
    return path


def watermark_points() -> tuple[np.ndarray, np.ndarray]:
    images = np.load(DATA / "watermark" / "wm.images.npy").reshape(-1, PIXELS) * 255.0
    labels = np.loadtxt(DATA / "watermark" / "wm.labels.txt").astype(int)
    return np.clip(images, 0.0, 1.0), np.where(labels > 0, labels - 1, 9)


def _image_of(path: Path) -> tuple[np.ndarray, int] | None:
    spec = parse_vnnlib(path, PIXELS, 10)
    eps = float(path.stem.rsplit("_", 1)[1])
    box = spec.regions[0].box
    image = np.where(box.lower > 0, box.lower + eps, box.upper - eps)
    if np.max(np.abs(image * 255 - np.round(image * 255))) > PIXEL_TOLERANCE * 255:
        return None
    rows = np.vstack([c.A for r in spec.regions for c in r.clauses])
    label = np.flatnonzero(np.all(rows > 0, axis=0))  # violation rows read y_label - y_j <= 0
    return (np.round(image * 255) / 255 + 0.0, int(label[0])) if len(label) == 1 else None  # + 0.0: no -0.0


def held_out_images() -> tuple[np.ndarray, np.ndarray]:
    """Distinct MNIST test images (and labels) from the shipped VNN-LIB specs."""
    seen: dict[bytes, tuple[np.ndarray, int]] = {}
    for pattern in SPEC_GLOBS:
        for path in sorted(BENCHMARKS.glob(pattern)):
            found = _image_of(path)
            if found is not None:
                seen.setdefault(found[0].tobytes(), found)
    images = np.array([image for image, _ in seen.values()])
    return images, np.array([label for _, label in seen.values()])


def _softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def repair_count(network: Path, count: int, test: tuple[np.ndarray, np.ndarray], out: Path, budget: float) -> dict[str, object]:
    images, targets = watermark_points()
    points, labels = images[:count], targets[:count]
    written, kept = out / f"mnist_points{count}.onnx", out / f"mnist_points{count}_unproven.onnx"
    settings = RepairSettings(budget=budget, output=written, keep_unproven=kept, side_effect_samples=0, data=test, decision="argmax")
    started = time.monotonic()
    report = repair_points(network, points, labels, ReassureStrategy(), settings, np.zeros(PIXELS), np.ones(PIXELS))
    seconds = time.monotonic() - started
    report.write_json(out / f"mnist_points{count}_report.json")
    original = load_network(network)
    buggy = run_onnxruntime(original, points).argmax(1) != labels
    row: dict[str, object] = {"count": count, "buggy": int(buggy.sum()), "status": report.status,
                              "parameters_added": report.parameters_added, "seconds": seconds,
                              "phases": report.phase_seconds}
    path = written if written.exists() else kept
    if path.exists():
        repaired = load_network(path)
        ok = run_onnxruntime(repaired, points).argmax(1) == labels
        before, after = run_onnxruntime(original, test[0]), run_onnxruntime(repaired, test[0])
        soft = _softmax(after.astype(np.float64)) - _softmax(before.astype(np.float64))
        data = report.side_effects["data"]
        row.update({
            "file": str(path), "success": float(ok.mean()), "buggy_fixed": float(ok[buggy].mean()) if buggy.any() else 1.0,
            "test_images": int(len(test[0])), "nd_inf_max_logits": data["nd_inf_max"], "nd_2_max_logits": data["nd_2_max"],
            "nd_inf_mean_softmax": float(np.abs(soft).max(axis=1).mean()),
            "nd_2_mean_softmax": float(np.linalg.norm(soft, axis=1).mean()),
            "decision_changed": data["decision_changed"], "accuracy_before": data["accuracy_before"],
            "accuracy_after": data["accuracy_after"],
        })
    return row


def table(rows: list[dict[str, object]]) -> str:
    head = (f"{'N':>4} {'buggy':>5} {'success':>8} {'ND∞ max':>9} {'ND2 max':>9} {'ND∞ sm':>9} {'ND2 sm':>9} "
            f"{'changed':>8} {'acc before':>10} {'acc after':>9} {'params added':>13} {'time s':>7}")
    lines = [head]
    for r in rows:
        if "success" not in r:
            lines.append(f"{r['count']:>4} {r['buggy']:>5}  no candidate ({r['status']})")
            continue
        lines.append(f"{r['count']:>4} {r['buggy']:>5} {100 * r['success']:>7.1f}% {r['nd_inf_max_logits']:>9.2e} "
                     f"{r['nd_2_max_logits']:>9.2e} {r['nd_inf_mean_softmax']:>9.2e} {r['nd_2_mean_softmax']:>9.2e} "
                     f"{100 * r['decision_changed']:>7.2f}% {100 * r['accuracy_before']:>9.1f}% "
                     f"{100 * r['accuracy_after']:>8.1f}% {r['parameters_added']:>13,} {r['seconds']:>7.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds per count")
    parser.add_argument("--out", default="repair-out/mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    network = mnist_network(out)
    test = held_out_images()
    print(f"{len(test[0])} held-out MNIST test images from the shipped VNN-LIB specs", flush=True)
    rows = []
    for count in args.counts:
        rows.append(repair_count(network, count, test, out, args.budget))
        print(json.dumps(rows[-1]), flush=True)
    (out / "mnist_points_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("ND∞/ND2 max: max over the test images of |Δ logits|∞ / |Δ logits|2; "
          "ND∞/ND2 sm: REASSURE's, the mean over them of |Δ softmax|∞ / |Δ softmax|2")
    print(table(rows))


if __name__ == "__main__":
    main()
