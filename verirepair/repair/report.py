"""`RepairReport`: what a repair run did, as JSON and as a short human-readable summary.

Side effects are measured by sampling, on the *files*: onnxruntime runs the original ONNX file
and the repaired one on the same points.

Decisions are judged by one rule (``decision_rule``): ``argmax`` (classifiers), ``argmin``
(cost-style outputs such as ACAS Xu's) or ``ranking`` (the whole order of the outputs, the default
without ``--decision``; its figures also give the arg-max and arg-min changes).

* ``fidelity`` — uniform samples of the property's input boxes on which the original is safe
  (i.e. outside every violating area): the fraction whose decision changed, and
  the largest and mean ``|Δ output|_inf``. This is the "drawdown" of the ACAS Xu repair literature.
* ``repaired_samples`` — samples on which the original violates: the fraction the repair fixed.
* ``outside`` — with a domain (``--domain``): the same figures on uniform samples of the domain
  outside the property's boxes; without one, a note that behaviour there was not constrained.
* ``data`` (when a data set is given) — accuracy before/after (judged by arg-max under
  ``ranking``) and the norm differences ND∞ / ND2 (mean and max over the data of
  ``|f'(x) - f(x)|`` in those norms).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..network import Network, run_onnxruntime
from ..spec import Box, Spec
from .input_domain import NOT_CONSTRAINED, outside_boxes


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
    # How decisions were judged (side effects, strategies that keep decisions): argmax, argmin or
    # ranking, and whether --decision chose it.
    decision_rule: str = "ranking"
    decision_rule_given: bool = False
    # A portfolio strategy (`auto`): each member that ran, with its share, calls, verdicts and why
    # it ended; and which member produced the best candidate (the written file when proven).
    portfolio: list[dict[str, object]] = field(default_factory=list)
    produced_by: str | None = None
    # A suite of properties (check-and-fix of several at once): one row per property, with its
    # verdict on the original network and on the candidate the run ended with (the written file
    # when repaired), and `suite_totals` of them.
    properties: list[dict[str, object]] = field(default_factory=list)
    suite: dict[str, int] = field(default_factory=dict)
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
        if self.suite:
            lines.append("  suite: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.suite.items()))
            lines += [f"    {row['property']}: before {row['before']} ({row['seconds_before']:.1f}s), after "
                      + (f"{row['after']} ({row['seconds_after']:.1f}s)" if row["after"] else "-") for row in self.properties]
        if self.iterations:
            lines.append(f"  iterations {len(self.iterations)}, counterexamples {self.counterexamples}, "
                         f"regions patched {self.regions_patched}, parameters added {self.parameters_added}"
                         f" (original {self.original_parameters})")
        if self.phase_seconds:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.phase_seconds.items()))
        for member in self.portfolio:
            lines.append("  portfolio: " + ", ".join(f"{k} {v}" for k, v in member.items() if k != "members"))
        if self.produced_by:
            lines.append(f"  best candidate from: {self.produced_by}")
        if self.side_effects:
            given = "--decision" if self.decision_rule_given else "no --decision: the whole order of the outputs"
            lines.append(f"  decisions judged by: {self.decision_rule} ({given})")
        fid = self.side_effects.get("fidelity")
        if isinstance(fid, dict) and fid.get("samples"):
            lines.append(f"  in the property's boxes, where the original is safe ({fid['samples']} samples): "
                         + _changed_line(fid, self.decision_rule))
        outside = self.side_effects.get("outside")
        if isinstance(outside, dict):
            lines.append(f"  outside the property's boxes, on the domain ({outside['samples']} samples): "
                         + _changed_line(outside, self.decision_rule) if outside.get("samples") else f"  {outside.get('note', 'no samples')}")
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


def suite_totals(rows: list[dict[str, object]]) -> dict[str, int]:
    """The totals of a suite's rows: verdicts before (held, violated, undecided) and after (proven,
    lost: held before and violated after, violated: still or newly violated otherwise, unknown:
    undecided or not verified)."""
    before = [row["before"] for row in rows]
    after = [(row["before"], row["after"]) for row in rows]
    return {
        "properties": len(rows),
        "held_before": before.count("unsat"),
        "violated_before": before.count("sat"),
        "undecided_before": len(rows) - before.count("unsat") - before.count("sat"),
        "proven_after": sum(a == "unsat" for _, a in after),
        "lost": sum(b == "unsat" and a == "sat" for b, a in after),
        "violated_after": sum(b != "unsat" and a == "sat" for b, a in after),
        "unknown_after": sum(a not in ("unsat", "sat") for _, a in after),
    }


def _changed_line(figures: dict, rule: str) -> str:
    what = "order of the outputs" if rule == "ranking" else rule
    extremes = "".join(f", {k.split('_')[0]} {100 * figures[k]:.3f}%" for k in ("argmax_changed", "argmin_changed")
                       if k in figures)
    return f"{what} changed {100 * figures['decision_changed']:.3f}%{extremes}, max |Δy| {figures['max_abs_change']:.3g}"


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


DECISION_RULES = ("argmax", "argmin", "ranking")


def decisions(outputs: np.ndarray, rule: str) -> np.ndarray:
    """The class each output row picks: ``argmin`` (ACAS Xu-style costs), else arg-max (classifiers;
    under ``ranking`` the top of the order)."""
    return outputs.argmin(axis=1) if rule == "argmin" else outputs.argmax(axis=1)


def decisions_changed(before: np.ndarray, after: np.ndarray, rule: str) -> np.ndarray:
    """[N] bool: which rows changed their decision under ``rule``; for ``ranking``, which rows
    changed the order of their outputs (ties kept in index order)."""
    if rule == "ranking":
        order = (np.argsort(-y, axis=1, kind="stable") for y in (before, after))
        return np.any(next(order) != next(order), axis=1)
    return decisions(before, rule) != decisions(after, rule)


def changed_figures(before: np.ndarray, after: np.ndarray, rule: str) -> dict[str, float]:
    """The fraction of rows whose decision changed under ``rule`` (and, for ``ranking``, their
    arg-max and arg-min), the largest and the mean ``|Δ output|_inf``."""
    if len(before) == 0:
        return {"decision_changed": 0.0, "max_abs_change": 0.0, "mean_abs_change": 0.0}
    change = np.abs(after - before).max(axis=1)
    figures = {"decision_changed": float(decisions_changed(before, after, rule).mean())}
    if rule == "ranking":
        for extreme in ("argmax", "argmin"):
            figures[f"{extreme}_changed"] = float(decisions_changed(before, after, extreme).mean())
    return figures | {"max_abs_change": float(change.max()), "mean_abs_change": float(change.mean())}


def side_effects(original: Network, repaired: Network, spec: Spec, samples: int, rule: str, seed: int,
                 data: tuple[np.ndarray, np.ndarray | None] | None = None,
                 domain: Box | None = None) -> dict[str, object]:
    result: dict[str, object] = {"decision_rule": rule}
    if samples > 0:
        x = sample_spec_boxes(spec, samples, seed)
        before = run_onnxruntime(original, x)
        after = run_onnxruntime(repaired, x)
        bad = np.array([spec.violation_at(p, y) for p, y in zip(x, before)])
        bad_after = np.array([spec.violation_at(p, y) for p, y in zip(x, after)])
        safe = ~bad
        result["fidelity"] = {"samples": int(safe.sum()), **changed_figures(before[safe], after[safe], rule),
                              "newly_violating": int((bad_after & safe).sum())}
        result["repaired_samples"] = {"samples": int(bad.sum()), "fixed": int((bad & ~bad_after).sum())}
        if domain is None:
            result["outside"] = {"samples": 0, "note": NOT_CONSTRAINED}
        else:
            far = outside_boxes(spec, domain, samples, np.random.default_rng(seed + 1))
            if len(far):
                figures = changed_figures(run_onnxruntime(original, far), run_onnxruntime(repaired, far), rule)
                result["outside"] = {"samples": len(far), **figures}
            else:
                result["outside"] = {"samples": 0, "note": "outside the property's boxes: the domain holds no samples there"}
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
            "decision_changed": float(decisions_changed(before, after, rule).mean()),
        }
        if labels is not None:
            truth = decisions(labels, rule) if labels.ndim == 2 else labels.astype(int)
            entry["accuracy_before"] = float((decisions(before, rule) == truth).mean())
            entry["accuracy_after"] = float((decisions(after, rule) == truth).mean())
        result["data"] = entry
    return result
