"""ArchRepair's whole-pixel shifts of labelled keep images: the shifts against a slicing oracle,
and what the samples train and judge on."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from verirepair import datasets
from verirepair.network import load_network
from verirepair.repair.archrepair import ArchRepairSettings
from verirepair.repair.archrepair.objective import RepairSamples
from verirepair.repair.archrepair.shifts import (
    randomly_shifted,
    shifted,
    with_shifted_copies,
)
from verirepair.repair.parameters import TrainableNetwork
from verirepair.repair.pointwise import label_spec

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (2, 5, 7)


def _oracle(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` [C, H, W] moved ``dy`` rows down and ``dx`` columns right, zeros moving in."""
    out = np.zeros_like(image)
    _, height, width = image.shape
    rows_to, rows_from = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    out[:, rows_to, cols_to] = image[:, rows_from, cols_from]
    return out


def _every_shift(x: np.ndarray, shape: tuple[int, int, int], pixels: int) -> dict[bytes, tuple[int, int, int]]:
    """Each row of ``x`` shifted by each (dy, dx) within ``pixels`` (float32 bytes) → (row, dy, dx)."""
    found = {}
    for row, (dy, dx) in itertools.product(range(len(x)), itertools.product(range(-pixels, pixels + 1), repeat=2)):
        found[_oracle(x[row].reshape(shape), dy, dx).astype(np.float32).tobytes()] = (row, dy, dx)
    return found


def test_a_shift_moves_every_pixel_and_fills_zeros_as_the_slicing_oracle_does() -> None:
    x = np.random.default_rng(0).random((49, int(np.prod(SHAPE)))) + 0.5  # no zero pixels of its own
    pairs = list(itertools.product(range(-3, 4), repeat=2))
    dy, dx = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    got = shifted(torch.tensor(x), SHAPE, dy, dx).numpy()
    for row, (y_shift, x_shift) in enumerate(pairs):
        np.testing.assert_array_equal(got[row].reshape(SHAPE), _oracle(x[row].reshape(SHAPE), y_shift, x_shift))
    copies = with_shifted_copies(torch.tensor(x[:3]), SHAPE, 2).numpy()
    expected = [_oracle(x[row].reshape(SHAPE), dy, dx).ravel()
                for dy, dx in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)) for row in range(3)]
    np.testing.assert_array_equal(copies, np.array(expected))


def test_random_shifts_are_shifts_within_reach_and_vary() -> None:
    x = np.random.default_rng(1).random((200, int(np.prod(SHAPE)))) + 0.5
    got = randomly_shifted(torch.tensor(x, dtype=torch.float32), SHAPE, 1, torch.Generator().manual_seed(0)).numpy()
    shifts = _every_shift(x, SHAPE, 1)
    found = [shifts.get(row.tobytes()) for row in got]
    assert all(f is not None and f[0] == k for k, f in enumerate(found))  # row k is a shift of input k
    assert len({f[1:] for f in found if f is not None}) == 9  # every shift within one pixel occurs


def test_keep_batches_are_shifted_keep_images_and_the_judge_sees_shifted_validation_copies() -> None:
    """With labelled images, each keep batch the model sees is keep inputs shifted by at most
    `shift_pixels` (never a validation row: the split is never trained on), compared with the
    original's outputs on those very images; the validation accuracy counts the split and its
    four shifted copies. Without an image shape (or with shifts off) nothing is shifted."""
    torch.set_num_threads(1)
    train = datasets.mnist("train")
    x, y = train.x[:300], train.y[:300]
    original = TrainableNetwork(load_network(ROOT / "models" / "mnist_cnn.onnx"))
    original.requires_grad_(False)
    spec = label_spec(784, 10, int(y[0]), np.clip(x[0] - 0.001, 0, 1), np.clip(x[0] + 0.001, 0, 1))
    settings = ArchRepairSettings(box_samples=20, keep_samples=300, batch_size=64, validation_share=0.2)
    samples = RepairSamples(spec, original, x, "argmax", settings, keep_labels=y, image_shape=(1, 28, 28))
    assert samples.validation_x is not None and samples.validation_y is not None
    keep_shifts = _every_shift(samples.keep_x.double().numpy(), (1, 28, 28), 1)
    validation_rows = {row.tobytes() for row in samples.validation_x.numpy()}
    seen: list[torch.Tensor] = []

    def recording(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return original(z)

    samples.loss(recording, "train", torch.Generator().manual_seed(0))
    batch = seen[0].numpy()
    assert len(batch) == 64 and all(row.tobytes() in keep_shifts for row in batch)
    assert not any(row.tobytes() in validation_rows for row in batch)
    assert any(keep_shifts[row.tobytes()][1:] != (0, 0) for row in batch)
    del seen[:]
    accuracy = samples.validation_accuracy(recording)
    judged = np.vstack([_oracle(v.reshape(1, 28, 28), dy, dx).reshape(1, -1)
                        for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)) for v in samples.validation_x.numpy()])
    np.testing.assert_array_equal(seen[0].numpy(), judged)
    predicted = original(torch.tensor(judged)).argmax(dim=1).numpy()
    assert accuracy == pytest.approx(np.mean(predicted == np.tile(samples.validation_y.numpy(), 5)), abs=1e-6)
    for plain in (RepairSamples(spec, original, x, "argmax", settings, keep_labels=y),
                  RepairSamples(spec, original, x, "argmax", ArchRepairSettings(box_samples=20, shift_pixels=0),
                                keep_labels=y, image_shape=(1, 28, 28))):
        del seen[:]
        plain.loss(recording, "train", torch.Generator().manual_seed(0))
        rows = {row.tobytes() for row in plain.keep_x.numpy()}
        assert all(row.tobytes() in rows for row in seen[0].numpy())
