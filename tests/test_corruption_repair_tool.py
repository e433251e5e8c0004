"""tools/corruption_repair.py's own pieces: the corruptions against direct computations, and the
point property against the network's decision in onnxruntime."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import ndimage

from verirepair import datasets
from verirepair.network import load_network, run_onnxruntime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tool(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    return importlib.import_module("corruption_repair")


def test_corruptions_stay_in_range_repeat_with_the_seed_and_match_their_definitions(tool: ModuleType) -> None:
    x = datasets.mnist("held_out").x[:6]
    for kind in tool.CORRUPTIONS:
        once, again = tool.corrupted(x, kind, 3), tool.corrupted(x, kind, 3)
        assert once.shape == x.shape and once.min() >= 0.0 and once.max() <= 1.0
        np.testing.assert_array_equal(once, again)
        assert not np.allclose(once, x)
    contrast = tool.corrupted(x, "contrast", 0)
    np.testing.assert_allclose(contrast.mean(axis=1), x.mean(axis=1), atol=1e-12)  # the mean stays, the spread shrinks
    np.testing.assert_allclose(contrast.std(axis=1), 0.25 * x.std(axis=1), rtol=1e-9)
    image = x[0].reshape(28, 28)
    np.testing.assert_allclose(tool.corrupted(x, "blur", 0)[0], np.clip(ndimage.gaussian_filter(image, 1.5), 0, 1).ravel())
    assert not np.array_equal(tool.corrupted(x, "noise", 1), tool.corrupted(x, "noise", 2))


def test_point_property_is_violated_exactly_where_the_network_decides_another_digit(tool: ModuleType) -> None:
    network = load_network(ROOT / "models" / "mnist_cnn.onnx")
    held_out = datasets.mnist("held_out")
    x = tool.corrupted(held_out.x[:40], "fog", 0)
    outputs = run_onnxruntime(network, x)
    for point, label, y in zip(x, held_out.y[:40], outputs):
        spec = tool.point_property(point, int(label), 0.01, "point")
        assert spec.regions[0].box.contains(point)
        assert spec.violation_at(point, y) == (int(np.argmax(y)) != int(label) or np.sum(y == y[label]) > 1)
