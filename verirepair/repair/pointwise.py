"""Point-wise repair: make given buggy inputs take a required label (``verirepair repair``).

The property is built in memory: one input box (the repair domain) and, for every other output
``j``, the violation clause ``y_label - y_j <= 0``. With one label per point (REASSURE's MNIST
experiment: each misclassified image gets its own true label) there is one such region per
distinct label, all on the same box, and each point is handed to the strategy with its region.
The strategy receives the points as its counterexamples. There is no box-wide proof here (the points are the specification): the written
file is checked in onnxruntime — every point must get the label — before it is written.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import atomic_write_bytes
from ..network import load_network, run_onnxruntime
from ..spec import Box, Clause, Region, Spec
from ..verify import Deadline
from .loop import RepairSettings, _parameters
from .report import Iteration, RepairReport, side_effects
from .strategy import RepairProblem, RepairStrategy


def label_spec(n_inputs: int, n_outputs: int, label: int, lower: np.ndarray, upper: np.ndarray,
               source: str = "<points>") -> Spec:
    clauses = []
    for j in range(n_outputs):
        if j != label:
            row = np.zeros((1, n_outputs))
            row[0, label], row[0, j] = 1.0, -1.0
            clauses.append(Clause(row, np.zeros(1)))
    return Spec(n_inputs, n_outputs, (Region(Box(lower, upper), tuple(clauses)),), source=source)


def labels_spec(n_inputs: int, n_outputs: int, labels: list[int], lower: np.ndarray, upper: np.ndarray) -> Spec:
    """One region per label (in the given order), all on the box ``[lower, upper]``."""
    regions = tuple(label_spec(n_inputs, n_outputs, label, lower, upper).regions[0] for label in labels)
    return Spec(n_inputs, n_outputs, regions, source="<points>")


def repair_points(onnx_path: str | Path, points: np.ndarray, label: int | np.ndarray, strategy: RepairStrategy,
                  settings: RepairSettings, lower: np.ndarray | None = None, upper: np.ndarray | None = None) -> RepairReport:
    """Repair ``points`` to ``label``: one int for all points, or an array with one label per point."""
    started = time.monotonic()
    network = load_network(onnx_path)
    points = np.asarray(points, dtype=np.float64).reshape(points.shape[0], -1)
    if points.shape[1] != network.n_inputs:
        raise InputError(None, "--points", f"points have {points.shape[1]} values, the network takes {network.n_inputs}")
    single = np.ndim(label) == 0
    labels = np.full(len(points), int(label)) if single else np.asarray(label).astype(int).reshape(-1)
    if labels.shape[0] != points.shape[0]:
        raise InputError(None, "--label", f"{labels.shape[0]} labels for {points.shape[0]} points")
    if np.any(labels < 0) or np.any(labels >= network.n_outputs):
        raise InputError(None, "--label", f"label {int(labels[(labels < 0) | (labels >= network.n_outputs)][0])} "
                                          f"outside 0..{network.n_outputs - 1}")
    lower = points.min(axis=0) if lower is None else np.broadcast_to(np.asarray(lower, dtype=np.float64), (network.n_inputs,)).copy()
    upper = points.max(axis=0) if upper is None else np.broadcast_to(np.asarray(upper, dtype=np.float64), (network.n_inputs,)).copy()
    if np.any(lower > upper) or np.any(points < lower) or np.any(points > upper):
        raise InputError(None, "--lower/--upper", "the domain must contain every point")
    distinct = sorted(set(labels.tolist()))
    spec = labels_spec(network.n_inputs, network.n_outputs, distinct, lower, upper)
    wanted = f"label {int(labels[0])}" if single else "their label"
    report = RepairReport(str(onnx_path), "<points>", strategy.name, "not-proven", "sat", original_parameters=_parameters(network),
                          decision_rule=settings.decision_rule, decision_rule_given=settings.decision is not None)
    before = run_onnxruntime(network, points).argmax(axis=1)
    is_buggy = before != labels
    buggy = points[is_buggy]
    report.notes.append(f"{len(buggy)} of {len(points)} points do not get {wanted} before repair")
    if len(buggy) == 0:
        report.status, report.verdict_before = "held", "unsat"
        report.total_seconds = time.monotonic() - started
        return report
    deadline = Deadline(settings.budget)
    targets = None if single else tuple(distinct.index(int(t)) for t in labels[is_buggy])
    problem = RepairProblem(network, spec, tuple(buggy), settings.seed, settings.device, area=False, targets=targets,
                             decision=settings.decision_rule)
    candidate = strategy.repair(problem, None, deadline)
    for phase, seconds in candidate.phase_seconds.items():
        report.add_phase(phase, seconds)
    data = candidate.model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="verirepair-") as folder:
        path = Path(folder) / "candidate.onnx"
        path.write_bytes(data)
        repaired = load_network(path)
        t = time.monotonic()
        after = run_onnxruntime(repaired, points).argmax(axis=1)
        report.add_phase("verify", time.monotonic() - t)
        fixed = int((after == labels).sum())
        report.iterations.append(Iteration(1, "fixed" if fixed == len(points) else "not-fixed", "onnxruntime", 0.0, dict(candidate.details)))
        report.regions_patched = int(candidate.details.get("regions_patched", 0))  # type: ignore[arg-type]
        report.parameters_added = int(candidate.details.get("parameters_added", 0))  # type: ignore[arg-type]
        report.counterexamples = len(buggy)
        report.verdict_after = f"{fixed}/{len(points)} points with {wanted}"
        t = time.monotonic()
        report.side_effects = side_effects(network, repaired, spec, settings.side_effect_samples, settings.decision_rule,
                                           settings.seed + 1, settings.data)
        report.add_phase("side_effects", time.monotonic() - t)
    if fixed == len(points):
        report.status = "repaired"
        if settings.output is not None:
            atomic_write_bytes(settings.output, data)
            report.written = str(settings.output)
    elif settings.keep_unproven is not None:
        atomic_write_bytes(settings.keep_unproven, data)
        report.kept_unproven = str(settings.keep_unproven)
    report.total_seconds = time.monotonic() - started
    return report
