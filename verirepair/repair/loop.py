"""The check-and-fix loop: verify, repair, export, re-verify the exported file, repeat.

Verification goes through `verirepair.verify` only. Every candidate is written to a temporary
ONNX file, loaded back with `load_network` and verified; the user's output file is written
(atomically, from the very bytes that were verified) only after an ``unsat`` verdict on it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import atomic_write_bytes
from ..network import Network, check_import_agrees, load_network
from ..spec import Spec
from ..verify import Deadline, Verdict, VerifySettings, load_problem, verify
from .report import Iteration, RepairReport, side_effects
from .strategy import RepairCandidate, RepairProblem, RepairStrategy


@dataclass(frozen=True)
class RepairSettings:
    budget: float = 600.0  # seconds for the whole run
    verify_timeout: float = 120.0  # per verification
    max_iterations: int = 50
    seed: int = 0
    device: str = "cpu"
    output: Path | None = None  # written only when proven
    keep_unproven: Path | None = None  # the last candidate, when not proven
    side_effect_samples: int = 10_000
    data: tuple[np.ndarray, np.ndarray | None] | None = None  # (inputs, labels or scores)
    decision: str = "argmax"  # how outputs pick a class: "argmax" (classifiers) or "argmin" (ACAS Xu scores)

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise ValueError(f"budget must be positive, got {self.budget}")
        if not self.verify_timeout > 0:
            raise ValueError(f"verify timeout must be positive, got {self.verify_timeout}")
        if self.decision not in ("argmax", "argmin"):
            raise ValueError(f"decision must be argmax or argmin, got {self.decision!r}")
        if self.max_iterations < 1:
            raise ValueError(f"max iterations must be at least 1, got {self.max_iterations}")
        if self.output is not None and self.keep_unproven is not None and Path(self.output) == Path(self.keep_unproven):
            raise ValueError("--keep-unproven must name a different file than -o")


def _verify_settings(settings: RepairSettings, deadline: Deadline) -> VerifySettings:
    return VerifySettings(timeout=max(1e-3, min(settings.verify_timeout, deadline.remaining())),
                          device=settings.device, seed=settings.seed)


def _parameters(network: Network) -> int:
    return int(sum(t.numel() for t in network.constants.values() if t.is_floating_point()))


def check_and_fix(onnx_path: str | Path, vnnlib_path: str | Path, strategy: RepairStrategy,
                  settings: RepairSettings) -> RepairReport:
    started = time.monotonic()
    deadline = Deadline(settings.budget)
    first = _verify_settings(settings, deadline)
    network, spec = load_problem(onnx_path, vnnlib_path, first)
    report = RepairReport(str(onnx_path), str(vnnlib_path), strategy.name, "undecided", "unknown",
                          original_parameters=_parameters(network))
    t = time.monotonic()
    verdict = verify(network, spec, first, Deadline(first.timeout))
    report.add_phase("verify", time.monotonic() - t)
    report.verdict_before = verdict.status
    if verdict.status == "unsat":
        report.status = "held"
        report.notes.append("the property already holds; nothing was written")
    elif verdict.status != "sat":
        report.notes.append(f"the original network could not be decided ({verdict.status}); nothing to repair from")
    else:
        assert verdict.counterexample is not None
        repair_network(network, spec, strategy, settings, [verdict.counterexample.x], report, deadline)
    report.total_seconds = time.monotonic() - started
    return report


def repair_network(network: Network, spec: Spec, strategy: RepairStrategy, settings: RepairSettings,
                   counterexamples: list[np.ndarray], report: RepairReport | None = None,
                   deadline: Deadline | None = None) -> RepairReport:
    """The repair half of `check_and_fix`, for a loaded network with known violations
    (``counterexamples``: inputs the caller confirmed in onnxruntime). Candidates are exported,
    loaded back and verified; a sat adds its counterexample, an undecided verdict hands the same
    problem back to the strategy (which may, e.g., ask for more margin) unless it answers with
    the very same candidate."""
    started = time.monotonic()
    deadline = deadline or Deadline(settings.budget)
    if report is None:
        report = RepairReport(str(network.path), spec.source, strategy.name, "undecided", "sat",
                              original_parameters=_parameters(network))
    counterexamples = list(counterexamples)
    previous: RepairCandidate | None = None
    best: tuple[bytes, Network] | None = None
    with tempfile.TemporaryDirectory(prefix="verirepair-") as folder:
        for number in range(1, settings.max_iterations + 1):
            if deadline.expired():
                report.notes.append("budget spent")
                break
            problem = RepairProblem(network, spec, tuple(counterexamples), settings.seed, settings.device,
                                    keep_inputs=settings.data[0] if settings.data is not None else None,
                                    decision=settings.decision)
            candidate = strategy.repair(problem, previous, deadline)
            for phase, seconds in candidate.phase_seconds.items():
                report.add_phase(phase, seconds)
            data = candidate.model.SerializeToString()
            if previous is not None and data == previous.model.SerializeToString():
                report.notes.append(f"iteration {number}: the strategy produced the same candidate again")
                break
            path = Path(folder) / f"candidate_{number}.onnx"
            path.write_bytes(data)
            repaired = load_network(path)
            try:  # the proof is about our import of the file: it must be the file's semantics
                for region in spec.regions:
                    check_import_agrees(repaired, region.box.lower, region.box.upper)
            except InputError as error:
                report.notes.append(f"candidate {number} not verified: {error.reason}")
                break
            t = time.monotonic()
            if deadline.expired():
                report.notes.append("budget spent before the candidate could be verified")
                best = (data, repaired)
                break
            vsettings = _verify_settings(settings, deadline)
            verdict: Verdict = verify(repaired, spec, vsettings, Deadline(vsettings.timeout))
            report.add_phase("verify", time.monotonic() - t)
            report.iterations.append(Iteration(number, verdict.status, verdict.decided_by, verdict.seconds, dict(candidate.details)))
            report.regions_patched = int(candidate.details.get("regions_patched", 0))  # type: ignore[arg-type]
            report.parameters_added = int(candidate.details.get("parameters_added", 0))  # type: ignore[arg-type]
            report.verdict_after = verdict.status
            best = (data, repaired)
            previous = candidate
            if verdict.status == "unsat":
                report.status = "repaired"
                if settings.output is not None:
                    atomic_write_bytes(settings.output, data)
                    report.written = str(settings.output)
                break
            if verdict.status == "sat":
                assert verdict.counterexample is not None
                counterexamples.append(verdict.counterexample.x)
                continue
            report.notes.append(f"the candidate of iteration {number} could not be decided ({verdict.status}: "
                                f"{'; '.join(verdict.notes) or verdict.decided_by})")
        else:
            report.notes.append(f"stopped after {settings.max_iterations} iterations")
        report.counterexamples = len(counterexamples)
        if report.status != "repaired":
            report.status = "not-proven"
        if best is not None:
            data, repaired = best
            if report.status != "repaired" and settings.keep_unproven is not None:
                atomic_write_bytes(settings.keep_unproven, data)
                report.kept_unproven = str(settings.keep_unproven)
            t = time.monotonic()
            report.side_effects = side_effects(network, repaired, spec, settings.side_effect_samples, settings.decision,
                                               settings.seed + 1, settings.data)
            report.add_phase("side_effects", time.monotonic() - t)
    report.total_seconds = time.monotonic() - started
    return report
