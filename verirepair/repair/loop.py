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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import progress
from ..errors import InputError, NotYet, SettingsError
from ..files import atomic_write_bytes
from ..network import Network, check_import_agrees, load_network
from ..spec import Box, Spec, disjunction_of, parse_vnnlib
from ..verify import (
    Deadline,
    Verdict,
    VerifySettings,
    check_problem,
    load_problem,
    verify,
    verify_with_certificate,
)
from .input_domain import check_domain
from .report import (
    DECISION_RULES,
    Iteration,
    RepairReport,
    decisions,
    side_effects,
    suite_totals,
)
from .strategy import (
    ACCURACY_POLISH,
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
    # A candidate of a suite of several properties is first screened: each property verified within
    # this share of the verification timeout (counterexamples and easy proofs). When that finds a
    # violation the candidate is rejected anyway, so the properties it left undecided are not
    # verified further; otherwise they get the whole timeout (1: no screening).
    screen_share: float = 0.2

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise SettingsError(f"budget must be positive, got {self.budget}")
        if not self.verify_timeout > 0:
            raise SettingsError(f"verify timeout must be positive, got {self.verify_timeout}")
        if self.decision is not None and self.decision not in DECISION_RULES:
            raise SettingsError(f"decision must be one of {', '.join(DECISION_RULES)}, got {self.decision!r}")
        if self.max_iterations < 1:
            raise SettingsError(f"max iterations must be at least 1, got {self.max_iterations}")
        if not 0 < self.screen_share <= 1:
            raise SettingsError(f"screen share must lie in (0, 1], got {self.screen_share}")
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


def _data_labels(settings: RepairSettings) -> np.ndarray | None:
    """The decision each `--data` input should get: its label, or the decision of its target
    scores; None without labels."""
    if settings.data is None or settings.data[1] is None:
        return None
    labels = settings.data[1]
    return decisions(labels, settings.decision_rule) if labels.ndim == 2 else labels.astype(np.int64).reshape(-1)


def _written(folder: str, number: int, data: bytes) -> Path:
    path = Path(folder) / f"candidate_{number}.onnx"
    path.write_bytes(data)
    return path


def _exported_and_verified(data: bytes, path: Path, suite: Sequence[Spec], settings: RepairSettings,
                           deadline: Deadline, report: RepairReport) -> tuple[Network, list[Verdict]] | None:
    """The candidate written at ``path`` loaded back and verified on every property of ``suite``,
    one verdict each (None, with a note, when its import does not agree with onnxruntime)."""
    repaired = load_network(path)
    try:  # the proof is about our import of the file: it must be the file's semantics
        for spec in suite:
            for region in spec.regions:
                check_import_agrees(repaired, region.box.lower, region.box.upper)
    except InputError as error:
        report.notes.append(f"{path.stem} not verified: {error.reason}")
        return None
    return repaired, _screened(repaired, suite, settings, deadline, report)


def _screened(network: Network, suite: Sequence[Spec], settings: RepairSettings, deadline: Deadline,
              report: RepairReport) -> list[Verdict]:
    """A candidate's verdicts on every property of ``suite``: screened first (see
    `RepairSettings.screen_share`); a property left undecided by a screening that found a violation
    gets an ``unknown`` verdict that says so."""
    if len(suite) == 1 or settings.screen_share >= 1:
        return _verified_each(network, suite, settings, deadline, report, "re-verify")
    screened = _verified_each(network, suite, settings, deadline, report, "screen", settings.screen_share)
    undecided = [k for k, verdict in enumerate(screened) if verdict.status not in ("sat", "unsat")]
    if any(verdict.status == "sat" for verdict in screened):
        note = "not verified further: the screening found another property violated"
        return [dataclasses.replace(verdict, status="unknown", notes=(*verdict.notes, note)) if k in undecided
                else verdict for k, verdict in enumerate(screened)]
    rest = iter(_verified_each(network, [suite[k] for k in undecided], settings, deadline, report, "re-verify"))
    return [next(rest) if k in undecided else verdict for k, verdict in enumerate(screened)]


def _verified_each(network: Network, suite: Sequence[Spec], settings: RepairSettings, deadline: Deadline,
                   report: RepairReport, stage: str, share: float = 1.0) -> list[Verdict]:
    """Every property of ``suite`` verified on ``network``, each with its own verification deadline
    (``share`` of the verification timeout)."""
    verdicts = []
    for spec in suite:
        t = time.monotonic()
        progress.stage(stage)
        vsettings = _verify_settings(settings, deadline)
        vsettings = dataclasses.replace(vsettings, timeout=max(1e-3, share * vsettings.timeout))
        verdicts.append(verify(network, spec, vsettings, Deadline(vsettings.timeout)))
        report.add_phase("verify", time.monotonic() - t)
    return verdicts


def _suite_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict for every property at once: the only one; else ``unsat`` when every property
    is proven, the first violated one's (its counterexample) when one is violated, else the first
    undecided one's; the seconds of them all."""
    if len(verdicts) == 1:
        return verdicts[0]
    seconds = sum(v.seconds for v in verdicts)
    first = next((v for v in verdicts if v.status == "sat"), None) or next((v for v in verdicts if v.status != "unsat"), None)
    if first is None:
        return Verdict("unsat", "+".join(dict.fromkeys(v.decided_by for v in verdicts)), seconds,
                       rests_on_solver=any(v.rests_on_solver for v in verdicts))
    return dataclasses.replace(first, seconds=seconds)


def _record_after(report: RepairReport, suite: Sequence[Spec], verdicts: Sequence[Verdict] | None) -> None:
    """A suite's rows (`RepairReport.properties`): the verdicts on the candidate the run ends with."""
    after = {spec.source: verdict for spec, verdict in zip(suite, verdicts or ())}
    for row in report.properties:
        verdict = after.get(str(row["property"]))
        row["after"], row["seconds_after"] = (verdict.status, round(verdict.seconds, 3)) if verdict else (None, None)


def _decisions_changed(network: Network, repaired: Network, spec: Spec, settings: RepairSettings) -> float:
    """The share of safe box samples whose decision changed, on a draw of its own (not the report's)."""
    fidelity = side_effects(network, repaired, spec, settings.side_effect_samples, settings.decision_rule, settings.seed + 2)["fidelity"]
    return float(fidelity["decision_changed"])  # type: ignore[index]


@dataclass(frozen=True)
class _Best:
    """The candidate the run keeps: its bytes, the network loaded from them, and its verdict on
    each property (None when it could not be verified in the budget)."""

    data: bytes
    network: Network
    verdicts: list[Verdict] | None


def _polished(strategy: RepairStrategy, problem: RepairProblem, proven: RepairCandidate, best: _Best,
              number: int, folder: str, suite: Sequence[Spec], settings: RepairSettings, deadline: Deadline,
              report: RepairReport) -> _Best:
    """The strategy's polished candidate when it is proven too (on every property of ``suite``)
    and changed fewer decisions on the loop's own samples of the boxes (with onnxruntime, on the
    files), or, polished for accuracy (`ACCURACY_POLISH`), when it is proven; else ``best``. A
    polished candidate with a counterexample is followed by another polishing attempt that knows
    it, up to `RepairSettings.polish_attempts`."""
    counterexamples = list(problem.counterexamples)
    boxes = disjunction_of(suite, problem.spec.source)
    for attempt in range(settings.polish_attempts):
        t = time.monotonic()
        progress.stage("polish", number + attempt)
        asked = dataclasses.replace(problem, counterexamples=tuple(counterexamples))
        candidate = strategy.polish(asked, proven, deadline) if not deadline.expired() else None
        report.add_phase("polish", time.monotonic() - t)
        if candidate is None or deadline.expired():
            return best
        data = candidate.model.SerializeToString()
        checked = _exported_and_verified(data, _written(folder, number + attempt, data), suite, settings, deadline, report)
        if checked is None:
            return best
        repaired, verdicts = checked
        verdict = _suite_verdict(verdicts)
        report.iterations.append(Iteration(number + attempt, verdict.status, verdict.decided_by, verdict.seconds,
                                           _details(candidate, suite, verdicts)))
        if verdict.status == "sat":
            counterexamples += [v.counterexample.x for v in verdicts if v.counterexample is not None]
            continue
        if verdict.status != "unsat":
            report.notes.append(f"the polished candidate was not decided ({verdict.status}); the proven one is kept")
            return best
        if candidate.details.get("polish_goal") == ACCURACY_POLISH:
            report.notes.append("polished after the proof for a higher accuracy on the strategy's validation split of "
                                f"the data ({_validation_figures(candidate)}), proven")
            return _Best(data, repaired, verdicts)
        before, after = (_decisions_changed(problem.original, n, boxes, settings) for n in (best.network, repaired))
        if after >= before:
            report.notes.append(f"the polished candidate was proven but changed no fewer decisions "
                                f"({100 * after:.2f} % vs {100 * before:.2f} %); the first proven one is kept")
            return best
        report.notes.append(f"polished after the proof: decisions changed {100 * before:.2f} % -> {100 * after:.2f} %, proven")
        return _Best(data, repaired, verdicts)
    report.notes.append(f"no polished candidate was proven in {settings.polish_attempts} attempts; the proven one is kept")
    return best


def _validation_figures(candidate: RepairCandidate) -> str:
    """The validation accuracies an accuracy-polished candidate reports, as far as it does."""
    names = {"original_validation_accuracy": "original", "validation_accuracy_proven": "proven",
             "validation_accuracy": "polished"}
    shown = [f"{label} {100 * float(candidate.details[key]):.2f} %" for key, label in names.items()  # type: ignore[arg-type]
             if isinstance(candidate.details.get(key), float)]
    return ", ".join(shown) or "not reported"


def _details(candidate: RepairCandidate, suite: Sequence[Spec], verdicts: Sequence[Verdict]) -> dict[str, object]:
    """An iteration's details: the candidate's, and for a suite each property's verdict."""
    details = dict(candidate.details)
    if len(suite) > 1:
        details["verdicts"] = {spec.source: verdict.status for spec, verdict in zip(suite, verdicts)}
    return details


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


def check_and_fix_suite(onnx_path: str | Path, vnnlib_paths: Sequence[str | Path], strategy: RepairStrategy,
                        settings: RepairSettings) -> RepairReport:
    """`check_and_fix` of a suite of properties of one network (`check_and_fix_suite_network`)."""
    deadline = Deadline(settings.budget)
    network = load_network(onnx_path)
    suite = [parse_vnnlib(path, n_inputs=network.n_inputs, n_outputs=network.n_outputs) for path in vnnlib_paths]
    for spec in suite:
        check_problem(network, spec, _verify_settings(settings, deadline))
    return check_and_fix_suite_network(network, suite, strategy, settings, deadline)


def check_and_fix_suite_network(network: Network, suite: Sequence[Spec], strategy: RepairStrategy,
                                settings: RepairSettings, deadline: Deadline | None = None) -> RepairReport:
    """Verify every property of ``suite`` (each already checked, `check_problem`; named by its
    ``source``); repair the violated ones together (`repair_suite`), so that what is written is
    proven on every property, those that held included. A suite of one is `check_and_fix_network`."""
    deadline = deadline or Deadline(settings.budget)
    if len(suite) == 1:
        return check_and_fix_network(network, suite[0], strategy, settings, deadline)
    names = [spec.source for spec in suite]
    twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if twice is not None:
        raise InputError(twice, None, "named twice in the property suite")
    if settings.certificate is not None:
        raise NotYet("a proof certificate of a property suite: give one property with --certificate")
    if settings.domain is not None:
        for spec in suite:
            check_domain(settings.domain, spec)
    report = _new_report(str(network.path), f"{len(suite)} properties", strategy, "unknown", network, settings)
    before = _verified_each(network, suite, settings, deadline, report, "verify")
    report.properties = [{"property": spec.source, "before": verdict.status, "after": None,
                          "seconds_before": round(verdict.seconds, 3), "seconds_after": None}
                         for spec, verdict in zip(suite, before)]
    report.verdict_before = _suite_verdict(before).status
    violated = [(spec, verdict) for spec, verdict in zip(suite, before) if verdict.counterexample is not None]
    undecided = [spec.source for spec, verdict in zip(suite, before) if verdict.status not in ("sat", "unsat")]
    if not violated and not undecided:
        report.status = "held"
        report.notes.append("every property of the suite already holds; nothing was written")
        for row in report.properties:
            row["after"], row["seconds_after"] = row["before"], 0.0
    elif not violated:
        report.notes.append(f"{len(undecided)} properties could not be decided on the original network "
                            f"({', '.join(undecided)}) and none is violated; nothing to repair from")
    else:
        repair_suite(network, [spec for spec, _ in violated], suite, strategy, settings,
                     [verdict.counterexample.x for _, verdict in violated if verdict.counterexample is not None],
                     report, deadline)
    report.suite = suite_totals(report.properties)
    lost = [str(row["property"]) for row in report.properties if row["before"] == "unsat" and row["after"] == "sat"]
    if lost:
        report.notes.append(f"the last candidate loses {', '.join(lost)}, which held before; it is not written as -o")
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
    return repair_suite(network, [spec], [spec], strategy, settings, counterexamples, report, deadline)


def repair_suite(network: Network, violated: Sequence[Spec], suite: Sequence[Spec], strategy: RepairStrategy,
                 settings: RepairSettings, counterexamples: list[np.ndarray], report: RepairReport | None = None,
                 deadline: Deadline | None = None) -> RepairReport:
    """`repair_network` for the properties ``violated`` of ``suite`` at once: the strategy is
    handed one problem, their regions side by side (`disjunction_of`), and a candidate counts as
    proven only when every property of ``suite`` is proven on its file. A property a candidate
    violates that is not among those repaired joins them, with its counterexample."""
    started = time.monotonic()
    deadline = deadline or Deadline(settings.budget)
    repairing = list(violated)
    label = violated[0].source if len(suite) == 1 else f"{len(suite)} properties"
    everywhere = disjunction_of(suite, label)  # where side effects are measured
    if settings.domain is not None:
        check_domain(settings.domain, everywhere)
    if report is None:
        report = _new_report(str(network.path), label, strategy, "sat", network, settings)
    counterexamples = list(counterexamples)
    previous: RepairCandidate | None = None
    best: _Best | None = None
    with tempfile.TemporaryDirectory(prefix="verirepair-") as folder:
        for number in range(1, settings.max_iterations + 1):
            if deadline.expired():
                report.notes.append("budget spent")
                break
            problem = RepairProblem(network, disjunction_of(repairing, f"{len(repairing)} violated properties"),
                                    tuple(counterexamples), settings.seed, settings.device,
                                    keep_inputs=settings.data[0] if settings.data is not None else None,
                                    keep_labels=_data_labels(settings),
                                    decision=settings.decision_rule, domain=settings.domain, suite=tuple(suite))
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
                best = _Best(data, load_network(_written(folder, number, data)), None)
                report.produced_by = _step(candidate, strategy)
                break
            checked = _exported_and_verified(data, _written(folder, number, data), suite, settings,
                                             _verification_deadline(strategy, deadline), report)
            if checked is None:
                break
            repaired, verdicts = checked
            verdict = _suite_verdict(verdicts)
            report.iterations.append(Iteration(number, verdict.status, verdict.decided_by, verdict.seconds,
                                               _details(candidate, suite, verdicts)))
            logger.info("iteration %d: the candidate is %s (%s, %.2f s)", number, verdict.status, verdict.decided_by,
                        verdict.seconds)
            report.regions_patched = int(candidate.details.get("regions_patched", 0))  # type: ignore[arg-type]
            report.parameters_added = int(candidate.details.get("parameters_added", 0))  # type: ignore[arg-type]
            report.verdict_after = verdict.status
            best = _Best(data, repaired, verdicts)
            report.produced_by = _step(candidate, strategy)
            previous = candidate
            if verdict.status == "unsat":
                report.status = "repaired"
                if settings.polish_attempts > 0 and settings.side_effect_samples > 0:
                    best = _polished(strategy, problem, candidate, best, number + 1, folder, suite, settings, deadline,
                                     report)
                if settings.output is not None:
                    atomic_write_bytes(settings.output, best.data)
                    report.written = str(settings.output)
                break
            if verdict.status == "sat":
                for spec, found in zip(suite, verdicts):
                    if found.counterexample is None:
                        continue
                    counterexamples.append(found.counterexample.x)
                    if all(spec is not known for known in repairing):
                        repairing.append(spec)
                        report.notes.append(f"the candidate of iteration {number} violates {spec.source}, "
                                            "which is now repaired with the others")
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
            _record_after(report, suite, best.verdicts)
            if report.status != "repaired" and settings.keep_unproven is not None:
                atomic_write_bytes(settings.keep_unproven, best.data)
                report.kept_unproven = str(settings.keep_unproven)
            t = time.monotonic()
            report.side_effects = side_effects(network, best.network, everywhere, settings.side_effect_samples,
                                               settings.decision_rule, settings.seed + 1, settings.data, settings.domain)
            report.add_phase("side_effects", time.monotonic() - t)
    report.total_seconds = time.monotonic() - started
    return report
