"""A minimal verify → repair → export → re-verify loop, local to BIRDNN.

The project's `check-and-fix` loop lives in ``verirepair/repair/loop.py``; this helper exists so
BIRDNN's tests and experiment scripts can run the domain-wise repair loop on their own. It keeps
the same rule: a candidate counts as repaired only when the complete verifier proves the property
on the *exported ONNX file*, loaded back from disk.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from ...files import atomic_write_bytes
from ...network import Network, load_network
from ...spec import Spec
from ...verify import Deadline, Verdict, VerifySettings, verify
from ..strategy import RepairCandidate, RepairProblem, RepairStrategy


@dataclass
class LoopOutcome:
    status: str  # "repaired" | "already-safe" | "not-proven"
    rounds: int
    seconds: float
    verdicts: list[Verdict]
    candidate: RepairCandidate | None
    repaired_path: Path | None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    counterexamples: list[np.ndarray] = field(default_factory=list)


def repair_until_proven(network: Network, spec: Spec, strategy: RepairStrategy, budget_s: float,
                        verify_settings: VerifySettings, output: Path | None = None, seed: int = 0,
                        max_rounds: int = 20, known: list[np.ndarray] | None = None) -> LoopOutcome:
    """Alternate repair and verification of the exported file until proven or out of budget.

    ``output`` receives the repaired ONNX file (atomically) only after it was proven. ``known``
    counterexamples (already confirmed by the caller in onnxruntime) skip the first verification,
    for networks whose violation the verifier does not find quickly.
    """
    deadline = Deadline(budget_s)
    phases: dict[str, float] = {}
    verdicts: list[Verdict] = []

    def check(model_network: Network) -> Verdict:
        start = time.monotonic()
        settings = replace(verify_settings, timeout=max(1.0, min(verify_settings.timeout, deadline.remaining())))
        verdict = verify(model_network, spec, settings, Deadline(settings.timeout))
        phases["verify"] = phases.get("verify", 0.0) + time.monotonic() - start
        verdicts.append(verdict)
        return verdict

    if known:
        counterexamples = [np.asarray(x, dtype=np.float64).reshape(-1) for x in known]
    else:
        first = check(network)
        if first.status == "unsat":
            return LoopOutcome("already-safe", 0, deadline.elapsed(), verdicts, None, None, phases)
        counterexamples = [first.counterexample.x] if first.counterexample is not None else []
    previous: RepairCandidate | None = None
    with tempfile.TemporaryDirectory(prefix="birdnn-") as folder:
        for round_index in range(1, max_rounds + 1):
            if deadline.expired():
                break
            problem = RepairProblem(network, spec, tuple(counterexamples), seed=seed)
            candidate = strategy.repair(problem, previous, deadline)
            for name, seconds in candidate.phase_seconds.items():
                phases[name] = phases.get(name, 0.0) + seconds
            path = Path(folder) / f"candidate_{round_index}.onnx"
            atomic_write_bytes(path, candidate.model.SerializeToString())
            verdict = check(load_network(path))
            if verdict.status == "unsat":
                repaired = None
                if output is not None:
                    atomic_write_bytes(output, path.read_bytes())
                    repaired = output
                return LoopOutcome("repaired", round_index, deadline.elapsed(), verdicts, candidate, repaired, phases,
                                   counterexamples)
            if verdict.counterexample is not None:
                counterexamples.append(verdict.counterexample.x)
            previous = candidate
    return LoopOutcome("not-proven", len(verdicts) - (0 if known else 1), deadline.elapsed(), verdicts, previous, None, phases,
                       counterexamples)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    atomic_write_bytes(path, model.SerializeToString())
