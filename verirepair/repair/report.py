"""`RepairReport`: what a repair run did, as JSON and as a short human-readable summary.

Side effects are measured by sampling, on the *files*: onnxruntime runs the original ONNX file
and the repaired one on the same points.

* ``fidelity`` — uniform samples of the property's input boxes on which the original is safe
  (i.e. outside every violating area): the fraction whose decision (arg-max, or arg-min for
  cost-style outputs such as ACAS Xu's) changed, and
  the largest and mean ``|Δ output|_inf``. This is the "drawdown" of the ACAS Xu repair literature.
* ``repaired_samples`` — samples on which the original violates: the fraction the repair fixed.
* ``data`` (when a data set is given) — accuracy before/after and the norm differences
  ND∞ / ND2 (mean and max over the data of ``|f'(x) - f(x)|`` in those norms).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..network import Network, run_onnxruntime
from ..spec import Spec


@dataclass
class Iteration:
    number: int
    verdict: str
    decided_by: str
    verify_seconds: float
    details: dict[str, object] = field(default_factory=dict)


@dataclass
class RepairReport:
    onnx: str
    vnnlib: str
    strategy: str
    status: str  # "held" | "repaired" | "not-proven" | "undecided"
    verdict_before: str
    verdict_after: str | None = None
    iterations: list[Iteration] = field(default_factory=list)
    counterexamples: int = 0
    regions_patched: int = 0
    parameters_added: int = 0
    original_parameters: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    side_effects: dict[str, object] = field(default_factory=dict)
    written: str | None = None
    kept_unproven: str | None = None
    certificate: str | None = None  # a proof certificate of the property for the proven file
    total_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def proven(self) -> bool:
        return self.status in ("held", "repaired")

    def add_phase(self, name: str, seconds: float) -> None:
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + float(seconds)

    def to_json(self) -> str:
        return json.dumps(_plain(asdict(self)), indent=2, sort_keys=False)

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    def summary(self) -> str:
        lines = [f"{self.status}: {Path(self.vnnlib).name} on {Path(self.onnx).name} "
                 f"(before: {self.verdict_before}, after: {self.verdict_after or '-'}) in {self.total_seconds:.1f}s"]
        if self.iterations:
            lines.append(f"  iterations {len(self.iterations)}, counterexamples {self.counterexamples}, "
                         f"regions patched {self.regions_patched}, parameters added {self.parameters_added}"
                         f" (original {self.original_parameters})")
        if self.phase_seconds:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.phase_seconds.items()))
        fid = self.side_effects.get("fidelity")
        if isinstance(fid, dict) and fid.get("samples"):
            lines.append(f"  outside the violating area ({fid['samples']} samples): decision changed "
                         f"{100 * fid['decision_changed']:.3f}%, max |Δy| {fid['max_abs_change']:.3g}")
        rep = self.side_effects.get("repaired_samples")
        if isinstance(rep, dict) and rep.get("samples"):
            lines.append(f"  violating samples fixed: {rep['fixed']}/{rep['samples']}")
        data = self.side_effects.get("data")
        if isinstance(data, dict):
            acc = ""
            if "accuracy_before" in data:
                acc = f"accuracy {100 * data['accuracy_before']:.2f}% → {100 * data['accuracy_after']:.2f}%, "
            lines.append(f"  data ({data['samples']} points): {acc}ND∞ mean {data['nd_inf_mean']:.3g} max "
                         f"{data['nd_inf_max']:.3g}, ND2 mean {data['nd_2_mean']:.3g}")
        if self.written:
            lines.append(f"  written: {self.written}")
        if self.certificate:
            lines.append(f"  certificate: {self.certificate}")
        if self.kept_unproven:
            lines.append(f"  best unproven attempt kept: {self.kept_unproven}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def sample_spec_boxes(spec: Spec, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    per = max(1, count // len(spec.regions))
    return np.vstack([r.box.lower + rng.random((per, spec.n_inputs)) * (r.box.upper - r.box.lower) for r in spec.regions])


def decisions(outputs: np.ndarray, rule: str) -> np.ndarray:
    """The class each output row picks: ``argmax`` (classifiers) or ``argmin`` (ACAS Xu-style costs)."""
    return outputs.argmin(axis=1) if rule == "argmin" else outputs.argmax(axis=1)


def side_effects(original: Network, repaired: Network, spec: Spec, samples: int, rule: str, seed: int,
                 data: tuple[np.ndarray, np.ndarray | None] | None = None) -> dict[str, object]:
    result: dict[str, object] = {"decision_rule": rule}
    if samples > 0:
        x = sample_spec_boxes(spec, samples, seed)
        before = run_onnxruntime(original, x)
        after = run_onnxruntime(repaired, x)
        bad = np.array([spec.violation_at(p, y) for p, y in zip(x, before)])
        bad_after = np.array([spec.violation_at(p, y) for p, y in zip(x, after)])
        safe = ~bad
        change = np.abs(after - before).max(axis=1)
        flipped = decisions(before, rule) != decisions(after, rule)
        result["fidelity"] = {
            "samples": int(safe.sum()),
            "decision_changed": float(flipped[safe].mean()) if safe.any() else 0.0,
            "max_abs_change": float(change[safe].max()) if safe.any() else 0.0,
            "mean_abs_change": float(change[safe].mean()) if safe.any() else 0.0,
            "newly_violating": int((bad_after & safe).sum()),
        }
        result["repaired_samples"] = {"samples": int(bad.sum()), "fixed": int((bad & ~bad_after).sum())}
    if data is not None:
        inputs, labels = data
        before = run_onnxruntime(original, inputs)
        after = run_onnxruntime(repaired, inputs)
        diff = after - before
        entry: dict[str, object] = {
            "samples": int(inputs.shape[0]),
            "nd_inf_mean": float(np.abs(diff).max(axis=1).mean()),
            "nd_inf_max": float(np.abs(diff).max()),
            "nd_2_mean": float(np.linalg.norm(diff, axis=1).mean()),
            "nd_2_max": float(np.linalg.norm(diff, axis=1).max()),
            "decision_changed": float((decisions(before, rule) != decisions(after, rule)).mean()),
        }
        if labels is not None:
            truth = decisions(labels, rule) if labels.ndim == 2 else labels.astype(int)
            entry["accuracy_before"] = float((decisions(before, rule) == truth).mean())
            entry["accuracy_after"] = float((decisions(after, rule) == truth).mean())
        result["data"] = entry
    return result
