"""`--strategy auto` (the rule and the portfolio), `--domain` and the `ranking` decision rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
import onnx_factory as F
from test_repair_loop import SPEC

from verirepair.cli import build_parser, main
from verirepair.errors import InputError
from verirepair.network import load_network
from verirepair.repair import (
    RepairCandidate,
    RepairProblem,
    RepairSettings,
    auto,
    check_and_fix,
    strategy_named,
)
from verirepair.repair.input_domain import (
    NOT_CONSTRAINED,
    check_domain,
    outside_boxes,
    parse_domain,
)
from verirepair.repair.registry import available
from verirepair.repair.report import sample_spec_boxes, side_effects
from verirepair.repair.strategy import WithoutPolish
from verirepair.spec import Box, parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, verify_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.vnnlib"
    spec.write_text(SPEC)
    # The violated 2-4-4-3 ReLU net of test_repair_loop (property: output 0 is not the largest).
    return {"spec": spec, "violated": F.save(F.mlp(2, 4, 3, seed=4), tmp_path / "violated.onnx")}


# ----- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_inputs, relu, suite, expected", [
    (5, True, False, (("reassure-boxes", 0.7), ("birdnn", None))),
    (16, True, False, (("reassure-boxes", 0.7), ("birdnn", None))),
    (17, True, False, (("birdnn", 0.7), ("reassure", None))),
    (784, True, True, (("reassure", 0.7), ("birdnn", None))),
    (5, True, True, (("reassure-boxes", 0.7), ("birdnn", None))),
    (3, False, False, (("birdnn", None),)),
    (784, False, True, (("birdnn", None),)),
])
def test_the_rule_picks_patches_for_relu_networks_and_birdnn_otherwise(n_inputs, relu, suite, expected):
    members = auto.portfolio_for(n_inputs, relu, suite)
    assert members == expected
    assert all(name in available() for name, _ in members)
    assert members[-1][1] is None and all(0 < share < 1 for _, share in members[:-1])


@pytest.mark.parametrize("n_inputs, relu, suite, expected", [
    (784, True, True, (("inner", 0.6), ("reassure", 0.7), ("birdnn", None))),
    (784, False, True, (("inner", 0.6), ("birdnn", None))),
    (784, True, False, (("birdnn", 0.7), ("reassure", None))),  # one property: as before
    (5, True, True, (("reassure-boxes", 0.7), ("birdnn", None))),  # few inputs: the box cover first
])
def test_a_classifier_suite_on_many_inputs_gets_inner_first(n_inputs, relu, suite, expected):
    members = auto.portfolio_for(n_inputs, relu, suite, classifier=True)
    assert members == expected
    assert all(name in available() for name, _ in members)


def test_classifier_properties_are_told_from_others():
    robust = parse_vnnlib(ROOT / "specs" / "digits_robust_0_eps0.12.vnnlib", n_inputs=64, n_outputs=10)
    steering = parse_vnnlib(ROOT / "specs" / "tanh_controller_steering_limit.vnnlib", n_inputs=3, n_outputs=2)
    assert auto.is_classifier_property(robust) and not auto.is_classifier_property(steering)


def test_auto_on_a_classifier_suite_hands_its_first_call_to_inner(monkeypatch):
    """The suite strategy's first call goes to the member the rule puts first: ``inner`` for the
    digits classifier's robustness property (64 inputs, one protected label)."""
    called = []

    class Recorder(WithoutPolish):
        def __init__(self, name):
            self.name = name

        def repair(self, problem, previous, deadline):
            called.append(self.name)
            return RepairCandidate(onnx.load(ROOT / "models" / "digits_classifier.onnx"))

    monkeypatch.setattr(auto, "strategy_named", Recorder)
    network = load_network(ROOT / "models" / "digits_classifier.onnx")
    spec = parse_vnnlib(ROOT / "specs" / "digits_robust_0_eps0.12.vnnlib", n_inputs=64, n_outputs=10)
    auto.auto_suite_strategy().repair(RepairProblem(network, spec, ()), None, Deadline(60))
    assert called == ["inner"]


def test_relu_networks_are_told_from_others(tmp_path):
    relu = load_network(F.save(F.mlp(2, 4, 3, seed=4), tmp_path / "relu.onnx"))
    tanh = load_network(F.save(F.activation("Tanh"), tmp_path / "tanh.onnx"))
    assert auto.is_relu_network(relu) and not auto.is_relu_network(tanh)


# ----- the portfolio -----------------------------------------------------------------------------
def test_auto_is_proven_on_the_exported_file_and_says_which_member_wrote_it(files, tmp_path):
    out = tmp_path / "fixed.onnx"
    settings = RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=500)
    report = check_and_fix(files["violated"], files["spec"], strategy_named("auto"), settings)
    assert report.status == "repaired" and report.written == str(out)
    # The oracle: the verifier, run afresh on the written file.
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    assert report.produced_by == "reassure-boxes"
    assert [m["member"] for m in report.portfolio] == ["reassure-boxes"]
    assert report.portfolio[0]["verdicts"][-1] == "unsat"


class _Unchanged(WithoutPolish):
    """A first member that cannot prove: it hands back the original network every time."""

    name = "unchanged"

    def repair(self, problem, previous, deadline):
        return RepairCandidate(onnx.load(str(problem.original.path)))


class _NotApplicable(WithoutPolish):
    name = "not-applicable"

    def repair(self, problem, previous, deadline):
        raise InputError(problem.original.path, "repair", "this member needs something else")


@pytest.mark.parametrize("first, ended", [(_Unchanged, "nothing new"), (_NotApplicable, "does not apply")])
def test_auto_falls_through_to_the_second_member_when_the_first_cannot_prove(files, tmp_path, monkeypatch, first, ended):
    from verirepair.repair.reassure import ReassureStrategy

    members = {"reassure-boxes": first, "birdnn": ReassureStrategy}  # a fast second member
    monkeypatch.setattr(auto, "strategy_named", lambda name: members[name]())
    out = tmp_path / "fixed.onnx"
    settings = RepairSettings(budget=120, verify_timeout=60, output=out, side_effect_samples=0)
    report = check_and_fix(files["violated"], files["spec"], auto.AutoStrategy(), settings)
    assert report.status == "repaired"
    assert verify_files(out, files["spec"], VerifySettings(timeout=60)).status == "unsat"
    assert [m["member"] for m in report.portfolio] == [first.name, "reassure"]
    assert str(report.portfolio[0]["ended"]).startswith(ended)
    assert report.portfolio[1]["verdicts"][-1] == "unsat" and report.produced_by == "reassure"
    if first is _Unchanged:  # its one candidate was verified (violated) before it handed over
        assert report.portfolio[0]["verdicts"] == ["sat"]


def test_a_members_candidates_are_verified_within_its_share(files, monkeypatch):
    from verirepair.repair import loop
    from verirepair.repair.reassure import ReassureStrategy

    members = {"reassure-boxes": _Unchanged, "birdnn": ReassureStrategy}
    monkeypatch.setattr(auto, "strategy_named", lambda name: members[name]())
    timeouts: list[float] = []

    def recording(network, spec, settings, deadline):
        timeouts.append(settings.timeout)
        return verify(network, spec, settings, deadline)

    verify = loop.verify
    monkeypatch.setattr(loop, "verify", recording)
    settings = RepairSettings(budget=200, verify_timeout=200, side_effect_samples=0, polish_attempts=0)
    report = check_and_fix(files["violated"], files["spec"], auto.AutoStrategy(), settings)
    assert report.status == "repaired" and len(timeouts) == 3  # the original, the first member's, the second's
    share = report.portfolio[0]["seconds_granted"]
    assert timeouts[1] <= share < 200 * auto.FIRST_SHARE + 1  # within the first member's share
    assert timeouts[2] > share  # the last member: the rest of the run


def test_check_and_fix_defaults_to_auto_and_repair_keeps_reassure():
    parser = build_parser()
    assert parser.parse_args(["check-and-fix", "a", "b"]).strategy == "auto"
    assert parser.parse_args(["repair", "net.onnx"]).strategy == "reassure"
    assert parser.parse_args(["check-and-fix", "a", "b"]).decision is None


# ----- --domain ----------------------------------------------------------------------------------
def test_domain_from_text_and_from_the_hull_of_a_vnnlib_files_boxes(tmp_path):
    box = parse_domain("-1,-2.5:1,3e0")
    assert box.lower.tolist() == [-1.0, -2.5] and box.upper.tolist() == [1.0, 3.0]
    two = tmp_path / "two.vnnlib"
    two.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                   "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 2) (<= X_1 3) (<= Y_0 0))"
                   " (and (>= X_0 4) (<= X_0 5) (>= X_1 -1) (<= X_1 1) (<= Y_0 0))))\n")
    hull = parse_domain(str(two))
    assert hull.lower.tolist() == [-1.0, -1.0] and hull.upper.tolist() == [5.0, 3.0]


@pytest.mark.parametrize("text, reason", [("1,2", "no such VNN-LIB file"), ("range.vnnlib", "no such VNN-LIB file"), ("1,a:2,3", "comma-separated"),
                                          ("0,0:1", "2 lower bounds but 1"), ("0,2:1,1", "input 1 has lower 2"),
                                          ("0,nan:1,1", "finite")])
def test_malformed_domains_are_refused_with_their_reason(text, reason):
    with pytest.raises(InputError, match=reason):
        parse_domain(text)


def test_a_domain_must_contain_every_box_of_the_property(files):
    spec = parse_vnnlib(files["spec"])  # the box [-1, 1]^2
    check_domain(Box(np.full(2, -1.0), np.full(2, 1.0)), spec)
    with pytest.raises(InputError, match="does not contain box 0.*input 1"):
        check_domain(Box(np.array([-2.0, -1.0]), np.array([2.0, 0.9])), spec)
    with pytest.raises(InputError, match="has 3 inputs"):
        check_domain(Box(np.full(3, -2.0), np.full(3, 2.0)), spec)


def test_cli_refuses_a_domain_that_misses_the_box_in_one_line(files, tmp_path, capsys):
    out = tmp_path / "fixed.onnx"
    code = main(["check-and-fix", str(files["spec"]), str(files["violated"]), "-o", str(out), "--domain=-2,-2:0.5,2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert error.startswith("verirepair: error: --domain: does not contain box 0") and "\n" not in error


def test_without_a_domain_the_report_says_outside_is_not_constrained(files, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["check-and-fix", str(files["spec"]), str(files["violated"]), "--budget", "120", "--samples", "300",
                 "--report", str(report)])
    assert code == 0
    summary = capsys.readouterr().out
    assert NOT_CONSTRAINED in summary and "decisions judged by: ranking (no --decision" in summary
    data = json.loads(report.read_text())
    assert data["side_effects"]["outside"]["note"] == NOT_CONSTRAINED
    assert data["decision_rule"] == "ranking" and data["decision_rule_given"] is False


# ----- the ranking rule, against onnxruntime -----------------------------------------------------
def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.vstack([session.run(None, {"x": row.astype(np.float32).reshape(1, -1)})[0] for row in x]).astype(np.float64)


def _order(y: np.ndarray) -> tuple[int, ...]:
    return tuple(sorted(range(len(y)), key=lambda j: (-y[j], j)))


def test_ranking_changes_are_measured_as_onnxruntime_sees_them(files, tmp_path):
    spec = parse_vnnlib(files["spec"])
    other = F.save(F.mlp(2, 4, 3, seed=5), tmp_path / "other.onnx")  # another net: many orders differ
    domain = Box(np.full(2, -3.0), np.full(2, 3.0))
    got = side_effects(load_network(files["violated"]), load_network(other), spec, 400, "ranking", 7, domain=domain)
    for where, x in (("fidelity", sample_spec_boxes(spec, 400, 7)),
                     ("outside", outside_boxes(spec, domain, 400, np.random.default_rng(8)))):
        before, after = _ort(files["violated"], x), _ort(other, x)
        if where == "fidelity":  # the safe samples only
            safe = np.array([not spec.violation_at(p, y) for p, y in zip(x, before)])
            before, after = before[safe], after[safe]
        ranking = np.mean([_order(b) != _order(a) for b, a in zip(before, after)])
        top = np.mean([_order(b)[0] != _order(a)[0] for b, a in zip(before, after)])
        bottom = np.mean([_order(b)[-1] != _order(a)[-1] for b, a in zip(before, after)])
        figures = got[where]
        assert figures["samples"] == len(before)
        assert figures["decision_changed"] == pytest.approx(ranking)
        assert figures["argmax_changed"] == pytest.approx(top) and figures["argmin_changed"] == pytest.approx(bottom)
        assert 0 < top <= ranking and bottom <= ranking
    assert got["decision_rule"] == "ranking"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_no_ranking_shortfall_means_the_whole_order_is_kept(seed, keep):
    import torch

    from verirepair.repair.birdnn.retrain import decision_shortfall

    rng = np.random.default_rng(seed)
    y0 = torch.tensor(rng.standard_normal((64, 5)))
    y = y0 + torch.tensor(rng.standard_normal((64, 5))) * rng.uniform(0, 1)
    shortfall = decision_shortfall(y, y0, "ranking", keep).numpy()
    for row in range(64):
        before, after = y0[row].numpy(), y[row].numpy()
        gaps0 = -np.diff(np.sort(before)[::-1])
        order = np.argsort(-before)
        gaps = -np.diff(after[order])
        assert shortfall[row] == pytest.approx(max(0.0, float(np.max(keep * gaps0 - gaps))), abs=1e-12)
        if shortfall[row] == 0:
            assert _order(after) == _order(before)
