"""The numbers behind a repair page's figures, computed with onnxruntime on the original and the
repaired ONNX files (the same execution the side-effect figures of `RepairReport` use)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import Network, run_onnxruntime
from ..repair.report import decisions
from ..spec import Box, Spec
from .plots import DecisionMap

# Networks with at most this many inputs get decision maps (two axes shown, the rest at the centre).
MAP_MAX_INPUTS = 8
MAP_STEPS = 150
ACAS_ADVISORIES = ("COC", "weak left", "weak right", "strong left", "strong right")


@dataclass(frozen=True)
class ChangeSamples:
    """``|Δ output|_inf`` per uniform sample, and whether the original violated there (None: no property)."""

    change: np.ndarray
    violating: np.ndarray | None


def sample_box(box: Box, count: int, rng: np.random.Generator) -> np.ndarray:
    return box.lower + rng.random((count, box.dim)) * (box.upper - box.lower)


def change_on(original: Network, repaired: Network, points: np.ndarray, spec: Spec | None) -> ChangeSamples:
    before = run_onnxruntime(original, points)
    after = run_onnxruntime(repaired, points)
    bad = None if spec is None else np.array([spec.violation_at(x, y) for x, y in zip(points, before)], dtype=bool)
    return ChangeSamples(np.abs(after - before).max(axis=1), bad)


def map_axes(box: Box) -> tuple[int, int] | None:
    """The two widest sides of the box (ties: the lower index), or None when fewer than two have width."""
    width = box.upper - box.lower
    order = [int(i) for i in np.argsort(-width, kind="stable") if width[i] > 0]
    if len(order) < 2:
        return None
    first, second = sorted(order[:2])
    return first, second


def decision_grid(original: Network, repaired: Network, box: Box, axes: tuple[int, int], rule: str) -> DecisionMap:
    """Decisions on a ``MAP_STEPS``² grid over ``axes`` of ``box``, every other input at the box centre."""
    first, second = axes
    xs = np.linspace(box.lower[first], box.upper[first], MAP_STEPS)
    ys = np.linspace(box.lower[second], box.upper[second], MAP_STEPS)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.tile((box.lower + box.upper) / 2, (grid_x.size, 1))
    points[:, first], points[:, second] = grid_x.ravel(), grid_y.ravel()
    shape = grid_x.shape
    before = decisions(run_onnxruntime(original, points), rule).reshape(shape)
    after = decisions(run_onnxruntime(repaired, points), rule).reshape(shape)
    return DecisionMap(xs, ys, f"input {first}", f"input {second}", before, after)


def class_names(n_outputs: int, rule: str) -> tuple[list[str], str]:
    """Names for the decision classes and a note on where they come from."""
    if rule == "argmin" and n_outputs == len(ACAS_ADVISORIES):
        return [f"{k}: {name}" for k, name in enumerate(ACAS_ADVISORIES)], \
            "classes named in the ACAS Xu advisory order (output 0 = clear of conflict)"
    return [f"class {k}" for k in range(n_outputs)], ""


@dataclass(frozen=True)
class ClassAccuracy:
    classes: list[int]
    counts: np.ndarray
    before: np.ndarray
    after: np.ndarray


def class_accuracy(original: Network, repaired: Network, inputs: np.ndarray, labels: np.ndarray,
                   rule: str) -> ClassAccuracy:
    """Per-class accuracy; 2-D ``labels`` are target scores whose decision is the label."""
    truth = decisions(labels, rule) if labels.ndim == 2 else labels.astype(int).reshape(-1)
    before = decisions(run_onnxruntime(original, inputs), rule) == truth
    after = decisions(run_onnxruntime(repaired, inputs), rule) == truth
    classes = sorted(int(c) for c in np.unique(truth))
    members = [truth == c for c in classes]
    return ClassAccuracy(classes, np.array([m.sum() for m in members]),
                         np.array([before[m].mean() for m in members]), np.array([after[m].mean() for m in members]))
