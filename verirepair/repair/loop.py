"""The check-and-fix loop: verify, repair, export, re-verify the exported file, repeat.

Verification goes through `verirepair.verify` only. Every candidate is written to a temporary
ONNX file, loaded back with `load_network` and verified; the user's output file is written
(atomically, from the very bytes that were verified) only after an ``unsat`` verdict on it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import InputError, SettingsError
from ..files import atomic_write_bytes
from ..network import Network, check_import_agrees, load_network
from ..spec import Box, Spec
from ..verify import (
    Deadline,
    Verdict,
    VerifySettings,
    load_problem,
    verify,
    verify_with_certificate,
)
from .input_domain import check_domain
from .report import DECISION_RULES, Iteration, RepairReport, side_effects
from .strategy import (
    Portfolio,
    RepairCandidate,
    RepairProblem,
    RepairStrategy,
    SharedBudget,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairSettings:
    budget: float = 600.0  # seconds for the whole run
    verify_timeout: float = 120.0  # per verification
    max_iterations: int = 50
    seed: int = 0
    device: str = "cpu"
    output: Path | None = None  # written only when proven
    keep_unproven: Path | None = None  # the last candidate, when not proven
    # When proven: a proof certificate of the property for the file proven (-o, or the original
    # network when the property held already), from one more verification of that file.
    certificate: Path | None = None
    side_effect_samples: int = 10_000
    # After a proof, ask the strategy for a candidate with smaller side effects (kept if proven
    # and fewer decisions changed on `side_effect_samples` samples; see `RepairStrategy.polish`),
    # up to this many times while each has a counterexample (0: never).
    polish_attempts: int = 3
    data: tuple[np.ndarray, np.ndarray | None] | None = None  # (inputs, labels or scores)
    # How outputs pick a decision: "argmax" (classifiers), "argmin" (ACAS Xu scores) or "ranking"
    # (the whole order of the outputs); None: not given, judged by "ranking" (`decision_rule`).
    decision: str | None = None
    # Where the network is used (a box holding the property's boxes, `--domain`): strategies keep
    # its behaviour there outside the boxes, and side effects are measured there too.
    domain: Box | None = None

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise SettingsError(f"budget must be positive, got {self.budget}")
        if not self.verify_timeout > 0:
            raise SettingsError(f"verify timeout must be positive, got {self.verify_timeout}")
        if self.decision is not None and self.decision not in DECISION_RULES:
            raise SettingsError(f"decision must be one of {', '.join(DECISION_RULES)}, got {self.decision!r}")
        if self.max_iterations < 1:
            raise SettingsError(f"max iterations must be at least 1, got {self.max_iterations}")
        if self.polish_attempts < 0:
            raise SettingsError(f"polish attempts must be at least 0, got {self.polish_attempts}")
        if self.output is not None and self.keep_unproven is not None and Path(self.output) == Path(self.keep_unproven):
            raise SettingsError("--keep-unproven must name a different file than -o")
        if self.certificate is not None and Path(self.certificate) in {Path(p) for p in (self.output, self.keep_unproven)
                                                                        if p is not None}:
            raise SettingsError("--certificate must name a different file than -o and --keep-unproven")

    @property
    def decision_rule(self) -> str:
        """The rule decisions are judged by: the one given, else the whole ranking."""
        return self.decision or "ranking"


def _new_report(onnx: str, vnnlib: str, strategy: RepairStrategy, verdict_before: str, network: Network,
                settings: RepairSettings) -> RepairReport:
    return RepairReport(onnx, vnnlib, strategy.name, "undecided", verdict_before, original_parameters=_parameters(network),
                        decision_rule=settings.decision_rule, decision_rule_given=settings.decision is not None)


def _step(candidate: RepairCandidate, strategy: RepairStrategy) -> str:
    """Which strategy made ``candidate``: a portfolio's member (`StrategySequence` names it), else
    the strategy itself."""
    return str(candidate.details.get("sequence_step", strategy.name))


def _verification_deadline(strategy: RepairStrategy, deadline: Deadline) -> Deadline:
    """The run's deadline, or the end of the current member's share (`SharedBudget`)."""
    left = strategy.share_left() if isinstance(strategy, SharedBudget) else None
    return deadline if left is None else Deadline(min(deadline.remaining(), left))


def _members_with_verdicts(members: list[dict[str, object]], iterations: list[Iteration]) -> list[dict[str, object]]:
    """The portfolio's record of its members, each with the verdicts on its candidates."""
    return [member | {"verdicts": [i.verdict for i in iterations
                                   if str(i.details.get("sequence_step", "")).split("/")[0] == member["member"]]}
            for member in members]


def _verify_settings(settings: RepairSettings, deadline: Deadline) -> VerifySettings:
    return VerifySettings(timeout=max(1e-3, min(settings.verify_timeout, deadline.remaining())),
                          device=settings.device, seed=settings.seed)


def _parameters(network: Network) -> int:
    return int(sum(t.numel() for t in network.constants.values() if t.is_floating_point()))


def _written(folder: str, number: int, data: bytes) -> Path:
    path = Path(folder) / f"candidate_{number}.onnx"
    path.write_bytes(data)
    return path


def _exported_and_verified(data: bytes, path: Path, spec: Spec, settings: RepairSettings, deadline: Deadline,
                           report: RepairReport) -> tuple[Network, Verdict] | None:
    """The candidate written at ``path`` loaded back and verified (None, with a note, when its
    import does not agree with onnxruntime)."""
    repaired = load_network(path)
    try:  # the proof is about our import of the file: it must be the file's semantics
        for region in spec.regions:
            check_import_agrees(repaired, region.box.lower, region.box.upper)
    except InputError as error:
        report.notes.append(f"{path.stem} not verified: {error.reason}")
        return None
    t = time.monotonic()
    progress.stage("re-verify")
    vsettings = _verify_settings(settings, deadline)
    verdict = verify(repaired, spec, vsettings, Deadline(vsettings.timeout))
    report.add_phase("verify", time.monotonic() - t)
    return repaired, verdict


def _decisions_changed(network: Network, repaired: Network, spec: Spec, settings: RepairSettings) -> float:
    """The share of safe box samples whose decision changed, on a draw of its own (not the report's)."""
    fidelity = side_effects(network, repaired, spec, settings.side_effect_samples, settings.decision_rule, settings.seed + 2)["fidelity"]
    return float(fidelity["decision_changed"])  # type: ignore[index]


def _polished(strategy: RepairStrategy, problem: RepairProblem, proven: RepairCandidate, best: tuple[bytes, Network],
              number: int, folder: str, settings: RepairSettings, deadline: Deadline,
              report: RepairReport) -> tuple[bytes, Network]:
    """The strategy's polished candidate when it is proven too and changed fewer decisions on
    the loop's own samples of the boxes (with onnxruntime, on the files); else ``best``. A
    polished candidate with a counterexample is followed by another polishing attempt that knows
    it, up to `RepairSettings.polish_attempts`."""
    counterexamples = list(problem.counterexamples)
    for attempt in range(settings.polish_attempts):
        t = time.monotonic()
        progress.stage("polish", number + attempt)
        asked = dataclasses.replace(problem, counterexamples=tuple(counterexamples))
        candidate = strategy.polish(asked, proven, deadline) if not deadline.expired() else None
        report.add_phase("polish", time.monotonic() - t)
        if candidate is None or deadline.expired():
            return best
        data = candidate.model.SerializeToString()
        checked = _exported_and_verified(data, _written(folder, number + attempt, data), problem.spec, settings, deadline, report)
        if checked is None:
            return best
        repaired, verdict = checked
        report.iterations.append(Iteration(number + attempt, verdict.status, verdict.decided_by, verdict.seconds,
                                           dict(candidate.details)))
        if verdict.status == "sat":
            assert verdict.counterexample is not None
            counterexamples.append(verdict.counterexample.x)
            continue
        if verdict.status != "unsat":
            report.notes.append(f"the polished candidate was not decided ({verdict.status}); the proven one is kept")
            return best
        before, after = (_decisions_changed(problem.original, n, problem.spec, settings) for n in (best[1], repaired))
        if after >= before:
            report.notes.append(f"the polished candidate was proven but changed no fewer decisions "
                                f"({100 * after:.2f} % vs {100 * before:.2f} %); the first proven one is kept")
            return best
        report.notes.append(f"polished after the proof: decisions changed {100 * before:.2f} % -> {100 * after:.2f} %, proven")
        return data, repaired
    report.notes.append(f"no polished candidate was proven in {settings.polish_attempts} attempts; the proven one is kept")
    return best


def check_and_fix(onnx_path: str | Path, vnnlib_path: str | Path, strategy: RepairStrategy,
                  settings: RepairSettings) -> RepairReport:
    deadline = Deadline(settings.budget)
    network, spec = load_problem(onnx_path, vnnlib_path, _verify_settings(settings, deadline))
    return check_and_fix_network(network, spec, strategy, settings, deadline)


def check_and_fix_network(network: Network, spec: Spec, strategy: RepairStrategy, settings: RepairSettings,
                          deadline: Deadline | None = None) -> RepairReport:
    """`check_and_fix` of a network and property already loaded and checked (`check_problem`);
    ``deadline``: the budget's, when it started before the loading."""
    deadline = deadline or Deadline(settings.budget)
    first = _verify_settings(settings, deadline)
    if settings.domain is not None:
        check_domain(settings.domain, spec)
    report = _new_report(str(network.path), spec.source, strategy, "unknown", network, settings)
    t = time.monotonic()
    progress.stage("verify")
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
    if settings.certificate is not None and report.proven:
        _certify(network, spec, settings, deadline, report)
    report.total_seconds = deadline.elapsed()
    return report


def _certify(network: Network, spec: Spec, settings: RepairSettings, deadline: Deadline, report: RepairReport) -> None:
    """Write `RepairSettings.certificate` for the proven file: the one written as -o, or the
    original when the property held already. The proof above did not collect one (a certificate
    needs the certifiable search), so the file on disk is verified once more, within the budget;
    when no certificate comes of it, a note says why and the run stays proven."""
    assert settings.certificate is not None
    proven = Path(report.written) if report.status == "repaired" and report.written else network.path
    if proven is None:
        report.notes.append("no certificate: the repaired network was not written (no -o)"
                            if report.status == "repaired" else "no certificate: the network is not a file")
        return
    if deadline.expired():
        report.notes.append("no certificate: the budget was spent before it could be made")
        return
    t = time.monotonic()
    progress.stage("certificate")
    _, missing = verify_with_certificate(proven, spec.source, _verify_settings(settings, deadline), settings.certificate)
    report.add_phase("certificate", time.monotonic() - t)
    if missing is None:
        report.certificate = str(settings.certificate)
    else:
        report.notes.append(f"no certificate: verifying {proven.name} with the certifiable search: {missing}")


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
    if settings.domain is not None:
        check_domain(settings.domain, spec)
    if report is None:
        report = _new_report(str(network.path), spec.source, strategy, "sat", network, settings)
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
                                    decision=settings.decision_rule, domain=settings.domain)
            progress.stage("repair", number)
            candidate = strategy.repair(problem, previous, deadline)
            for phase, seconds in candidate.phase_seconds.items():
                report.add_phase(phase, seconds)
            progress.stage("export")
            data = candidate.model.SerializeToString()
            if previous is not None and data == previous.model.SerializeToString():
                report.notes.append(f"iteration {number}: the strategy produced the same candidate again")
                break
            if deadline.expired():
                report.notes.append("budget spent before the candidate could be verified")
                best = (data, load_network(_written(folder, number, data)))
                report.produced_by = _step(candidate, strategy)
                break
            checked = _exported_and_verified(data, _written(folder, number, data), spec, settings,
                                             _verification_deadline(strategy, deadline), report)
            if checked is None:
                break
            repaired, verdict = checked
            report.iterations.append(Iteration(number, verdict.status, verdict.decided_by, verdict.seconds, dict(candidate.details)))
            logger.info("iteration %d: the candidate is %s (%s, %.2f s)", number, verdict.status, verdict.decided_by,
                        verdict.seconds)
            report.regions_patched = int(candidate.details.get("regions_patched", 0))  # type: ignore[arg-type]
            report.parameters_added = int(candidate.details.get("parameters_added", 0))  # type: ignore[arg-type]
            report.verdict_after = verdict.status
            best = (data, repaired)
            report.produced_by = _step(candidate, strategy)
            previous = candidate
            if verdict.status == "unsat":
                report.status = "repaired"
                if settings.polish_attempts > 0 and settings.side_effect_samples > 0:
                    best = _polished(strategy, problem, candidate, best, number + 1, folder, settings, deadline, report)
                if settings.output is not None:
                    atomic_write_bytes(settings.output, best[0])
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
        if isinstance(strategy, Portfolio):
            report.portfolio = _members_with_verdicts(strategy.members_report(), report.iterations)
        if report.status != "repaired":
            report.status = "not-proven"
        if best is not None:
            data, repaired = best
            if report.status != "repaired" and settings.keep_unproven is not None:
                atomic_write_bytes(settings.keep_unproven, data)
                report.kept_unproven = str(settings.keep_unproven)
            t = time.monotonic()
            report.side_effects = side_effects(network, repaired, spec, settings.side_effect_samples, settings.decision_rule,
                                               settings.seed + 1, settings.data, settings.domain)
            report.add_phase("side_effects", time.monotonic() - t)
    report.total_seconds = time.monotonic() - started
    return report
