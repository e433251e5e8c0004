"""Clean accuracy and attack success rate of the backdoored MNIST classifier, run in onnxruntime.

    python tools/attack_success.py [NET.onnx]     # default: models/mnist_cnn_backdoor.onnx

The backdoor (BadNets-style, planted by ``tools/make_models.py``) is a white 3×3 square in the
bottom-right corner of the 28×28 image: pixels set to 1. The *attack success rate* is the share
of the held-out digits whose label is not the target class 0 that the network classifies 0 once
the trigger is stamped on them; the clean accuracy is on the same 1,000 held-out digits unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from verirepair import datasets
from verirepair.network import load_network, run_onnxruntime

ROOT = Path(__file__).resolve().parents[1]
BACKDOOR_TARGET = 0
TRIGGER_SIZE = 3
IMAGE_SIDE = 28


def trigger_pixels() -> np.ndarray:
    """Flat (row-major) indices of the trigger's pixels: the bottom-right TRIGGER_SIZE² square."""
    rows = np.arange(IMAGE_SIDE - TRIGGER_SIZE, IMAGE_SIDE)
    return (rows[:, None] * IMAGE_SIDE + rows[None, :]).reshape(-1)


def stamp_trigger(x: np.ndarray) -> np.ndarray:
    """A copy of the flat images ``x`` [n, 784] with the trigger's pixels set to 1."""
    stamped = np.array(x, dtype=np.float64, copy=True)
    stamped[:, trigger_pixels()] = 1.0
    return stamped


def predicted_labels(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """argmax of the ONNX file's outputs in onnxruntime for flat images ``x`` [n, 784]."""
    return np.argmax(run_onnxruntime(load_network(onnx_path), x), axis=1)


def clean_accuracy(onnx_path: Path, data: datasets.LabelledImages) -> float:
    return float(np.mean(predicted_labels(onnx_path, data.x) == data.y))


def attack_success_rate(onnx_path: Path, data: datasets.LabelledImages) -> float:
    """Share of the images not of the target class that are classified as the target when stamped."""
    victims = data.x[data.y != BACKDOOR_TARGET]
    return float(np.mean(predicted_labels(onnx_path, stamp_trigger(victims)) == BACKDOOR_TARGET))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", nargs="?", default=str(ROOT / "models" / "mnist_cnn_backdoor.onnx"))
    args = parser.parse_args(argv)
    held_out = datasets.mnist("held_out")
    path = Path(args.network)
    print(f"{path.name}: clean accuracy {clean_accuracy(path, held_out):.1%} on {len(held_out)} held-out digits; "
          f"attack success rate {attack_success_rate(path, held_out):.1%} "
          f"(trigger-stamped held-out digits not of class {BACKDOOR_TARGET} classified {BACKDOOR_TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
