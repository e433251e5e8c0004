"""The check-and-fix loop, point-wise repair and their CLI, on tiny ReLU networks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F  # noqa: E402

from verirepair.cli import main  # noqa: E402
from verirepair.repair import RepairCandidate, RepairSettings, check_and_fix, strategy_named  # noqa: E402
from verirepair.repair.strategy import ACCURACY_POLISH, WithoutPolish  # noqa: E402
from verirepair.verify import VerifySettings, verify_files  # noqa: E402

# Violated when output 0 is the largest on [-1, 1]^2.
SPEC = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (>= X_0 -1.0))
(assert (<= X_0 1.0))
(assert (>= X_1 -1.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 Y_1))
(assert (>= Y_0 Y_2))
"""


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.vnnlib"
    spec.write_text(SPEC)
    return {
        "spec": spec,
        # 2-4-4-3 nets: seed 4 violates the property in one linear region, seed 0 satisfies it.
        "violated": F.save(F.mlp(2, 4, 3, seed=4), tmp_path / "violated.onnx"),
        "holds": F.save(F.mlp(2, 8, 3, seed=0), tmp_path / "holds.onnx"),
    }


def test_check_and_fix_writes_a_file_the_verifier_proves(files, tmp_path):
    out = tmp_path / "fixed.onnx"
    settings = RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=500)
    report = check_and_fix(files["violated"], files["spec"], strategy_named("reassure"), settings)
    assert report.verdict_before == "sat"
    assert report.status == "repaired" and report.written == str(out)
    assert report.regions_patched >= 1 and report.parameters_added > 0
    assert report.side_effects["repaired_samples"]["fixed"] == report.side_effects["repaired_samples"]["samples"]
    assert report.side_effects["fidelity"]["newly_violating"] == 0
    # Independent re-verification of the written file.
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    json.loads(report.to_json())


def test_property_that_holds_writes_nothing(files, tmp_path):
    out = tmp_path / "fixed.onnx"
    report = check_and_fix(files["holds"], files["spec"], strategy_named("reassure"),
                           RepairSettings(budget=60, output=out, side_effect_samples=0))
    assert report.status == "held" and not out.exists()


class _DoNothing(WithoutPolish):
    """A strategy that hands back the original network: never proven."""

    name = "nothing"

    def repair(self, problem, previous, deadline):
        import onnx

        return RepairCandidate(onnx.load(str(problem.original.path)))


def test_unproven_run_writes_only_the_keep_file(files, tmp_path):
    out, keep = tmp_path / "fixed.onnx", tmp_path / "attempt.onnx"
    settings = RepairSettings(budget=60, max_iterations=2, output=out, keep_unproven=keep, side_effect_samples=0)
    report = check_and_fix(files["violated"], files["spec"], _DoNothing(), settings)
    # the second answer is the same candidate again: the loop stops instead of re-verifying it
    assert report.status == "not-proven" and len(report.iterations) == 1
    assert any("same candidate" in note for note in report.notes)
    assert not out.exists() and keep.exists()


def _last_layer_changed(model, swap: bool):
    """``model`` (an `onnx_factory.mlp`) with output 0 lowered by 100 (never the largest, so the
    property holds) and, if ``swap``, outputs 1 and 2 exchanged (most decisions change)."""
    import onnx
    from onnx import numpy_helper

    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for init in changed.graph.initializer:
        if init.name in ("W2", "b2"):
            value = numpy_helper.to_array(init).copy()
            if swap:
                value[[1, 2]] = value[[2, 1]]
            if init.name == "b2":
                value[0] -= 100.0
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    return changed


class _Polishing:
    """Repairs with a fixed candidate and polishes with another one (or None)."""

    name = "polishing"

    def __init__(self, first, polished, details=None) -> None:
        self.first, self.polished, self.polish_calls = first, polished, 0
        self.details = details or {}
        self.counterexamples_seen: list[tuple] = []

    def repair(self, problem, previous, deadline):
        return RepairCandidate(self.first)

    def polish(self, problem, proven, deadline):
        self.polish_calls += 1
        self.counterexamples_seen.append(problem.counterexamples)
        return RepairCandidate(self.polished, dict(self.details)) if self.polished is not None else None


@pytest.mark.parametrize("offered, kept, note", [
    ("lowered", "lowered", "polished after the proof"),  # proven and changes no decision
    ("violated", "swapped", "no polished candidate was proven in 3 attempts"),
    ("swapped", "swapped", "no fewer decisions"),
    (None, "swapped", None),
])
def test_a_polished_candidate_replaces_the_proof_only_if_proven_with_fewer_decisions_changed(files, tmp_path, offered, kept, note):
    import onnx

    violated = onnx.load(str(files["violated"]))
    models = {"violated": violated, "swapped": _last_layer_changed(violated, swap=True),
              "lowered": _last_layer_changed(violated, swap=False), None: None}
    out = tmp_path / "fixed.onnx"
    strategy = _Polishing(models["swapped"], models[offered])
    report = check_and_fix(files["violated"], files["spec"], strategy,
                           RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=2000,
                                          decision="argmax"))  # lowering output 0 changes rankings, not arg-max
    attempts = 3 if offered == "violated" else 1  # each counterexample asks for another attempt
    assert report.status == "repaired" and strategy.polish_calls == attempts
    assert [len(c) for c in strategy.counterexamples_seen] == list(range(1, attempts + 1))
    assert out.read_bytes() == models[kept].SerializeToString()
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    assert len(report.iterations) == (1 if offered is None else 1 + attempts)
    assert (note is None) == (not report.notes) and all(note in n for n in report.notes)
    # the report's side effects are those of the file written
    assert (report.side_effects["fidelity"]["decision_changed"] < 0.05) == (kept == "lowered")


@pytest.mark.parametrize("offered, kept, note", [
    ("swapped again", "swapped again", "polished after the proof for a higher accuracy"),  # proven: kept
    ("violated", "swapped", "no polished candidate was proven in 3 attempts"),
])
def test_a_candidate_polished_for_accuracy_replaces_the_proof_if_proven(files, tmp_path, offered, kept, note):
    """`ACCURACY_POLISH`: the strategy judged it more accurate; the loop keeps it when it is proven,
    though it changes no fewer decisions than the proof."""
    import onnx

    violated = onnx.load(str(files["violated"]))
    swapped = _last_layer_changed(violated, swap=True)
    again = onnx.ModelProto()
    again.CopyFrom(swapped)
    again.doc_string = "the same weights, other bytes"
    models = {"violated": violated, "swapped": swapped, "swapped again": again}
    out = tmp_path / "fixed.onnx"
    strategy = _Polishing(swapped, models[offered], {"polish_goal": ACCURACY_POLISH, "validation_accuracy": 0.9})
    report = check_and_fix(files["violated"], files["spec"], strategy,
                           RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=2000,
                                          decision="argmax"))
    assert report.status == "repaired" and strategy.polish_calls == (3 if offered == "violated" else 1)
    assert out.read_bytes() == models[kept].SerializeToString()
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    assert len(report.notes) == 1 and note in report.notes[0], report.notes
    if offered != "violated":
        assert "polished 90.00 %" in report.notes[0]


@pytest.mark.parametrize("flag, calls", [([], 1), (["--no-polish"], 0)])
def test_cli_no_polish_keeps_the_first_proof(files, tmp_path, monkeypatch, flag, calls):
    import onnx

    import verirepair.cli as cli

    violated = onnx.load(str(files["violated"]))
    strategy = _Polishing(_last_layer_changed(violated, swap=True), _last_layer_changed(violated, swap=False))
    monkeypatch.setattr(cli, "_strategy", lambda name: strategy)
    out = tmp_path / "fixed.onnx"
    assert main(["check-and-fix", str(files["spec"]), str(files["violated"]), "-o", str(out), "--budget", "120",
                 "--samples", "2000", *flag]) == 0
    assert strategy.polish_calls == calls
    kept = strategy.polished if calls else strategy.first
    assert out.read_bytes() == kept.SerializeToString()


def test_cli_check_and_fix_and_report(files, tmp_path, capsys):
    out, rep = tmp_path / "fixed.onnx", tmp_path / "report.json"
    code = main(["check-and-fix", str(files["spec"]), str(files["violated"]), "-o", str(out),
                 "--budget", "120", "--report", str(rep), "--samples", "200"])
    assert code == 0 and out.exists()
    assert json.loads(rep.read_text())["status"] == "repaired"
    assert "repaired" in capsys.readouterr().out
    assert main(["check-and-fix", str(files["spec"]), str(files["violated"]), "--strategy", "nope"]) == 2


def _points_with_wrong_labels(onnx_path):
    """One point in each of six linear regions, each with a label it does not get (two labels in use)."""
    from verirepair.network import load_network, run_onnxruntime
    from verirepair.repair.reassure.regions import relu_network_of

    network = load_network(onnx_path)
    x = np.random.default_rng(1).uniform(-1, 1, (3000, 2))
    first = {}
    for i, key in enumerate(map(bytes, relu_network_of(network).patterns(x))):
        first.setdefault(key, i)  # one point per linear region
    points = x[sorted(first.values())][:6]
    before = run_onnxruntime(network, points).argmax(1)
    labels = (before + 1 + np.arange(len(points)) % 2) % 3
    assert len(points) >= 3 and len(set(labels.tolist())) >= 2
    return points, labels


def test_repair_points_with_one_label_per_point(files, tmp_path):
    """Points in several linear regions, each with its own required label (REASSURE's MNIST
    experiment); the written file gives every point its label in onnxruntime."""
    from verirepair.errors import InputError
    from verirepair.network import load_network, run_onnxruntime
    from verirepair.repair import repair_points
    from verirepair.repair.reassure import ReassureStrategy

    points, labels = _points_with_wrong_labels(files["violated"])
    out = tmp_path / "labels_fixed.onnx"
    settings = RepairSettings(budget=120, output=out, side_effect_samples=200)
    report = repair_points(files["violated"], points, labels, ReassureStrategy(), settings, -np.ones(2), np.ones(2))
    assert report.status == "repaired" and report.regions_patched == len(points)
    assert np.array_equal(run_onnxruntime(load_network(out), points).argmax(1), labels)
    with pytest.raises(InputError):
        repair_points(files["violated"], points, labels[:-1], ReassureStrategy(), settings)


def test_cli_repair_points_and_convert(files, tmp_path, capsys):
    from verirepair.network import load_network, run_onnxruntime

    network = load_network(files["violated"])
    x = np.random.default_rng(0).uniform(-1, 1, (3000, 2))
    labels = run_onnxruntime(network, x).argmax(1)
    points = x[labels == 0][:5]
    assert len(points) == 5
    np.save(tmp_path / "points.npy", points)
    out = tmp_path / "points_fixed.onnx"
    code = main(["repair", "--strategy", "reassure", "--points", str(tmp_path / "points.npy"), "--label", "1",
                 str(files["violated"]), "-o", str(out), "--lower=-1,-1", "--upper", "1,1", "--samples", "200"])
    assert code == 0
    assert np.all(run_onnxruntime(load_network(out), points).argmax(1) == 1)
    assert main(["repair", str(files["violated"])]) == 4  # only point-wise repair is built
    assert main(["repair", "--strategy", "reassure-boxes", "--points", str(tmp_path / "points.npy"), "--label", "1",
                 str(files["violated"]), "-o", str(tmp_path / "never.onnx")]) == 2
    assert not (tmp_path / "never.onnx").exists()
    several, per_point = _points_with_wrong_labels(files["violated"])
    np.save(tmp_path / "several.npy", several)
    np.save(tmp_path / "labels.npy", per_point)
    out_labels = tmp_path / "labels_fixed.onnx"
    code = main(["repair", "--points", str(tmp_path / "several.npy"), "--labels", str(tmp_path / "labels.npy"),
                 str(files["violated"]), "-o", str(out_labels), "--lower=-1,-1", "--upper", "1,1", "--samples", "200"])
    assert code == 0
    assert np.array_equal(run_onnxruntime(load_network(out_labels), several).argmax(1), per_point)
    np.save(tmp_path / "short.npy", per_point[:-1])
    assert main(["repair", "--points", str(tmp_path / "several.npy"), "--labels", str(tmp_path / "short.npy"),
                 str(files["violated"]), "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
    nnet = tmp_path / "t.nnet"
    from test_repair_reassure import NNET

    nnet.write_text(NNET)
    assert main(["convert", str(nnet), str(tmp_path / "t.onnx"), "--normalize", "raw"]) == 0
    assert (tmp_path / "t.onnx").exists()


def test_reassure_patches_are_exactly_zero_on_the_domain_outside_the_property_box(files, tmp_path):
    import torch

    from verirepair.network import load_network, run_onnxruntime
    from verirepair.repair.reassure import ReassureSettings, ReassureStrategy
    from verirepair.spec import Box

    out = tmp_path / "fixed.onnx"
    domain = Box(np.full(2, -3.0), np.full(2, 3.0))
    settings = RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=0)
    report = check_and_fix(files["violated"], files["spec"], ReassureStrategy(ReassureSettings(domain=domain)), settings)
    assert report.status == "repaired" and report.regions_patched >= 1
    x = np.random.default_rng(3).uniform(-3, 3, (20000, 2))
    far = x[np.abs(x).max(axis=1) > 1.1]  # outside the property's box [-1, 1]^2 and its support band
    # Exactly zero in the files' float64 semantics (our import); onnxruntime's float32 arithmetic
    # sums the wider layers in another order, so its outputs differ by float32 rounding only.
    original, repaired = load_network(files["violated"]), load_network(out)
    exact = [n.forward(torch.from_numpy(far)).detach().numpy() for n in (original, repaired)]
    assert np.abs(exact[1] - exact[0]).max() <= 1e-9
    before, after = (run_onnxruntime(n, far) for n in (original, repaired))
    assert np.abs(after - before).max() <= 1e-5


class _Recording(WithoutPolish):
    """A strategy that returns the original model and records how it was called."""

    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def repair(self, problem, previous, deadline):
        self.calls.append((self.name, previous is not None, deadline.remaining()))
        return RepairCandidate(F.mlp(2, 4, 3, seed=4), {"mine": self.name})


def test_strategy_sequence_hands_over_at_its_share_with_a_fresh_start(monkeypatch):
    from verirepair.repair import sequence
    from verirepair.repair.strategy import RepairProblem
    from verirepair.verify import Deadline

    clock = [1000.0]
    monkeypatch.setattr(sequence.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr("verirepair.verify.deadline.time.monotonic", lambda: clock[0])
    calls: list = []
    chain = sequence.StrategySequence("both", [_Recording("a", calls), _Recording("b", calls)], [0.6])
    problem = RepairProblem(None, None, ())  # type: ignore[arg-type]  # the fakes never look at it
    deadline = Deadline(100.0)
    first = chain.repair(problem, None, deadline)
    clock[0] += 30.0
    previous = RepairCandidate(F.mlp(2, 4, 3, seed=5), {})
    chain.repair(problem, previous, deadline)
    clock[0] += 26.0  # 56 s of 100: within 5 % of a's 60 % share, too little left for a
    last = chain.repair(problem, previous, deadline)
    # a only gets the time up to its share; b starts without a's candidate and keeps the rest.
    assert [(n, p) for n, p, _ in calls] == [("a", False), ("a", True), ("b", False)]
    assert calls[0][2] == pytest.approx(60.0) and calls[1][2] == pytest.approx(30.0)
    assert calls[2][2] == pytest.approx(44.0)
    assert last.details == {"mine": "b", "sequence_step": "b"}
    # A strategy that answers with the previous candidate hands over at once.
    calls.clear()
    again = sequence.StrategySequence("both", [_Recording("a", calls), _Recording("b", calls)], [0.6])
    again.repair(problem, None, deadline)
    again.repair(problem, first, deadline)  # a returns the very model of `first`
    assert [(n, p) for n, p, _ in calls] == [("a", False), ("a", True), ("b", False)]
    with pytest.raises(ValueError):
        sequence.StrategySequence("bad", [_Recording("a", calls)], [0.5])


def test_box_patches_are_proven_safe_on_a_grid_and_change_nothing_outside_their_bands(files, tmp_path):
    """Oracles: the verifier on the written file, onnxruntime on a dense grid, the support formula."""
    from verirepair.network import load_network, run_onnxruntime
    from verirepair.repair.reassure.boxes import BoxPatchSettings, BoxPatchStrategy
    from verirepair.repair.reassure.support import support_value

    out = tmp_path / "boxes.onnx"
    strategy = BoxPatchStrategy(BoxPatchSettings(max_boxes=32))
    report = check_and_fix(files["violated"], files["spec"], strategy,
                           RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=500))
    assert report.status == "repaired" and 1 <= report.regions_patched <= 32
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    axis = np.linspace(-1, 1, 161)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    before = run_onnxruntime(load_network(files["violated"]), grid)
    after = run_onnxruntime(load_network(out), grid)
    violates = lambda y: (y[:, 0] >= y[:, 1]) & (y[:, 0] >= y[:, 2])  # noqa: E731
    assert violates(before).any() and not violates(after).any()
    untouched = np.all([support_value(p.A, p.b, p.gamma, grid) == 0.0 for p in strategy.patches], axis=0)
    assert untouched.sum() > 100
    np.testing.assert_allclose(after[untouched], before[untouched], atol=1e-5, rtol=1e-5)


def test_box_patches_too_small_at_first_grow_until_proven(files, tmp_path):
    """Patches sized from one sample with a tiny factor are too small: the verifier's
    counterexamples (or undecided verdicts) must grow them until the written file is proven."""
    from verirepair.repair.reassure.boxes import BoxPatchSettings, BoxPatchStrategy

    out = tmp_path / "grown.onnx"
    strategy = BoxPatchStrategy(BoxPatchSettings(max_boxes=8, samples=1, sample_factor=1e-3))
    report = check_and_fix(files["violated"], files["spec"], strategy,
                           RepairSettings(budget=240, verify_timeout=60, output=out, side_effect_samples=200))
    assert report.status == "repaired" and len(report.iterations) >= 2
    assert any(i.verdict != "unsat" for i in report.iterations[:-1])
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device; the repair device test needs one")
@pytest.mark.parametrize("strategy", ["reassure", "reassure-boxes", "birdnn"])
def test_check_and_fix_on_cuda_writes_a_file_the_verifier_proves(strategy, files, tmp_path):
    out = tmp_path / "fixed.onnx"
    settings = RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=500, device="cuda")
    report = check_and_fix(files["violated"], files["spec"], strategy_named(strategy), settings)
    assert report.status == "repaired" and report.written == str(out)
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"


@pytest.mark.parametrize("field, value", [("budget", 0.0), ("verify_timeout", -1.0), ("max_iterations", 0),
                                          ("polish_attempts", -1), ("decision", "max"), ("screen_share", 0.0),
                                          ("screen_share", 1.5)])
def test_repair_settings_refuse_values_that_mean_nothing(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        RepairSettings(**{field: value})


class _Problems(WithoutPolish):
    """A strategy that hands back the original network and keeps the problems it was given."""

    name = "problems"

    def __init__(self) -> None:
        self.problems: list = []

    def repair(self, problem, previous, deadline):
        import onnx

        self.problems.append(problem)
        return RepairCandidate(onnx.load(str(problem.original.path)))


@pytest.mark.parametrize("decision", ["argmax", "argmin"])
def test_the_data_sets_labels_reach_the_strategy_as_the_keep_inputs_decisions(files, decision):
    """1-D labels as they are; 2-D target scores as their decision under the decision rule."""
    x = np.random.default_rng(0).uniform(-1, 1, (12, 2))
    scores = np.random.default_rng(1).normal(size=(12, 3))
    labels = np.arange(12) % 3
    for y, expected in ((labels, labels), (scores, scores.argmin(axis=1) if decision == "argmin" else scores.argmax(axis=1)),
                        (None, None)):
        strategy = _Problems()
        settings = RepairSettings(budget=60, max_iterations=1, side_effect_samples=0, data=(x, y), decision=decision)
        check_and_fix(files["violated"], files["spec"], strategy, settings)
        problem = strategy.problems[0]
        np.testing.assert_array_equal(problem.keep_inputs, x)
        if expected is None:
            assert problem.keep_labels is None
        else:
            np.testing.assert_array_equal(problem.keep_labels, expected)
