"""End to end: BIRDNN repairs of the shipped tanh controller, proven by the verifier on the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairProblem, RepairSettings, check_and_fix, registry
from verirepair.repair.birdnn import BirdnnFinetune, BirdnnRetrain, BirdnnSettings
from verirepair.spec import parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify

ROOT = Path(__file__).resolve().parents[1]
TANH = ROOT / "models" / "tanh_controller.onnx"
STEERING_LIMIT = ROOT / "specs" / "tanh_controller_steering_limit.vnnlib"


def _sampled_violations(path: Path, count: int, seed: int) -> int:
    network = load_network(path)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(count, 3))
    y = run_onnxruntime(network, x)
    return sum(spec.violation_at(p, q) for p, q in zip(x, y))


def _certified_retrain() -> BirdnnRetrain:
    return BirdnnRetrain(BirdnnSettings(certify_below_violation=1.0))


@pytest.mark.parametrize("strategy", [BirdnnRetrain, BirdnnFinetune, _certified_retrain],
                         ids=["retrain", "finetune", "retrain-certified"])
def test_birdnn_repair_of_the_tanh_controller_is_proven_on_the_exported_file(strategy, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    original = load_network(TANH)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    assert _sampled_violations(TANH, 4000, seed=1) > 0  # the shipped network does violate it
    output = tmp_path / "repaired.onnx"
    report = check_and_fix(TANH, STEERING_LIMIT, strategy(),
                           RepairSettings(budget=120, verify_timeout=45, output=output, side_effect_samples=1000))
    assert report.status == "repaired", [i.verdict for i in report.iterations]
    # Independent re-check: load the written file afresh and verify again; sample in onnxruntime.
    repaired = load_network(output)
    assert verify(repaired, spec, VerifySettings(timeout=45)).status == "unsat"
    assert _sampled_violations(output, 4000, seed=2) == 0
    assert repaired.op_types.count("Tanh") == original.op_types.count("Tanh")
    assert (repaired.input_name, repaired.input_shape, repaired.output_name, repaired.output_shape) == \
        (original.input_name, original.input_shape, original.output_name, original.output_shape)


def test_strategies_are_registered_under_their_names() -> None:
    for name in ("birdnn-retrain", "birdnn-finetune"):
        assert registry.strategy_named(name).name == name


def test_undecided_rounds_turn_on_the_certified_term_then_the_escalated_hinge(monkeypatch) -> None:
    """Each candidate the verifier could not decide (handed back with no new counterexample)
    steps up: certified term on, then the escalated hinge and target; a counterexample does not."""
    original = load_network(TANH)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4000, 3))
    y = run_onnxruntime(original, x)
    bad = [p for p, q in zip(x, y) if spec.violation_at(p, q)]
    seen: list[tuple[bool, bool, float]] = []

    def record(session, settings, budget, phases):
        seen.append((session.certify, session.escalated, session.data.target_margin))
        return {}

    monkeypatch.setattr(BirdnnRetrain, "improve", staticmethod(record))
    settings = BirdnnSettings(certify_below_violation=0.0, domain_samples=2000, validation_samples=500,
                              outside_samples=500)
    strategy = BirdnnRetrain(settings)
    problem = RepairProblem(original, spec, (bad[0],))
    candidate = strategy.repair(problem, None, Deadline(60))
    candidate = strategy.repair(RepairProblem(original, spec, (bad[0], bad[1])), candidate, Deadline(60))  # sat
    for _ in range(2):  # undecided twice
        candidate = strategy.repair(RepairProblem(original, spec, (bad[0], bad[1])), candidate, Deadline(60))
    assert [(c, e) for c, e, _ in seen] == [(False, False), (False, False), (True, False), (True, True)]
    margins = [m for _, _, m in seen]
    assert margins[2] == pytest.approx(margins[1] * settings.margin_growth)
    assert margins[3] == pytest.approx(margins[2] * settings.margin_growth)


@pytest.mark.parametrize("share, escalates", [(0.0, True), (1.0, False)], ids=["past-its-share", "within-its-share"])
def test_a_call_still_leaving_leaves_open_past_its_share_switches_to_the_escalated_hinge(monkeypatch, share, escalates) -> None:
    """Within one retraining call the certified hinge steps up (squared to linear) once
    ``escalate_after_share`` of the call's time passed with leaves of the partition still open."""
    from verirepair.repair.birdnn import retrain as retrain_module

    original = load_network(TANH)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4000, 3))
    bad = [p for p, q in zip(x, run_onnxruntime(original, x)) if spec.violation_at(p, q)]
    squared_calls: list[bool] = []
    shortfall = retrain_module.certified_shortfall

    def recording(module, boxes, target, scale, squared=True):
        squared_calls.append(squared)
        return shortfall(module, boxes, target, scale, squared)

    monkeypatch.setattr(retrain_module, "certified_shortfall", recording)
    settings = BirdnnSettings(certify_below_violation=1.0, escalate_after_share=share, max_checks=2,
                              domain_samples=2000, validation_samples=500, outside_samples=500)
    strategy = BirdnnRetrain(settings)
    strategy.repair(RepairProblem(original, spec, (bad[0],)), None, Deadline(60))
    assert strategy.session is not None and strategy.session.escalated is escalates
    # Squared first (the first block), linear from the switch on, never back.
    assert squared_calls[0] and squared_calls == sorted(squared_calls, reverse=True)
    assert squared_calls[-1] is not escalates


@pytest.mark.parametrize("rare, seconds, calls", [(True, 600, 3), (False, 600, 1), (True, 40, 1)],
                         ids=["rare-with-time", "not-rare", "rare-without-time"])
def test_a_candidate_with_many_open_leaves_trains_on_before_verification(monkeypatch, rare, seconds, calls) -> None:
    """Where violations are rare, a call that leaves more than ``verify_open_share`` of the
    partition open is followed by another before the candidate goes out, while a call of at least
    a quarter of ``max_seconds`` fits; otherwise the candidate goes to the verifier at once."""
    original = load_network(TANH)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4000, 3))
    bad = [p for p, q in zip(x, run_onnxruntime(original, x)) if spec.violation_at(p, q)]
    still_open = iter([60, 30, 10, 5])
    made: list[int] = []

    def improve(session, settings, budget, phases):
        made.append(next(still_open))
        return {"partition_boxes": 100, "partition_open": made[-1]}

    monkeypatch.setattr(BirdnnRetrain, "improve", staticmethod(improve))
    settings = BirdnnSettings(certify_below_violation=1.0 if rare else 0.0, verify_open_share=0.25,
                              domain_samples=2000, validation_samples=500, outside_samples=500)
    candidate = BirdnnRetrain(settings).repair(RepairProblem(original, spec, (bad[0],)), None, Deadline(seconds))
    assert len(made) == calls
    assert candidate.details["partition_open"] == made[-1]


def test_polishing_gives_back_decisions_keeps_the_property_on_its_samples_and_restarts_from_the_proof(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`BirdnnRetrain.polish`: the candidate changes at most (1 - polish_gain) of the proven
    candidate's held-out decisions and satisfies the property on every held-out sample (both
    re-measured here in onnxruntime on the exported files); every call starts from the proven
    weights, and a call with nothing to polish leaves them in place."""
    torch.set_num_threads(1)
    original = load_network(TANH)
    spec = parse_vnnlib(STEERING_LIMIT, n_inputs=3, n_outputs=2)
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4000, 3))
    bad = [p for p, q in zip(x, run_onnxruntime(original, x)) if spec.violation_at(p, q)]
    settings = BirdnnSettings(polish_above=0.0, domain_samples=4000, validation_samples=2000, outside_samples=1000)
    strategy = BirdnnRetrain(settings)
    problem = RepairProblem(original, spec, (bad[0],))
    # Deadlines far beyond the work (seconds on a quiet machine): what each call does must not
    # depend on how loaded the machine is.
    proven = strategy.repair(problem, None, Deadline(600))
    assert strategy.session is not None
    proven_weights = strategy.session.current.state()
    polished = strategy.polish(problem, proven, Deadline(600))
    assert polished is not None

    held_out = strategy.session.data.validation.x.numpy().astype(np.float64)
    before = run_onnxruntime(original, held_out)
    safe = np.array([not spec.violation_at(p, q) for p, q in zip(held_out, before)])

    def changed_and_violations(model) -> tuple[float, int]:
        path = tmp_path / "candidate.onnx"
        path.write_bytes(model.SerializeToString())
        after = run_onnxruntime(load_network(path), held_out)
        return (float((after.argmax(axis=1) != before.argmax(axis=1))[safe].mean()),
                sum(spec.violation_at(p, q) for p, q in zip(held_out, after)))

    proven_changed, _ = changed_and_violations(proven.model)
    polished_changed, violations = changed_and_violations(polished.model)
    assert violations == 0
    assert polished_changed <= (1 - settings.polish_gain) * proven_changed + 1e-6
    assert polished.details["proven_held_out_decisions_changed"] == pytest.approx(proven_changed, abs=1e-6)

    from verirepair.repair.birdnn import retrain as retrain_module

    measured = retrain_module.property_accuracy
    starts: list[list[torch.Tensor]] = []

    def recording(module, data):  # the first measurement of a call is of the weights it starts from
        starts.append(module.state())
        return measured(module, data)

    monkeypatch.setattr(retrain_module, "property_accuracy", recording)
    strategy.polish(problem, proven, Deadline(60))  # starts from the proof, not from `polished`
    assert all(torch.equal(a, b) for a, b in zip(starts[0], proven_weights))
    strategy.settings = BirdnnSettings(polish_above=1.0)  # nothing to polish: the proven weights stay
    assert strategy.polish(problem, proven, Deadline(60)) is None
    assert all(torch.equal(a, b) for a, b in zip(strategy.session.current.state(), proven_weights))
