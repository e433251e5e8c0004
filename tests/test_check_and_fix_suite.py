"""check-and-fix of a property suite: every property verified, the violated ones repaired together,
and the written file proven on every property, those that held before included.

The shipped models and properties (specs/expected.csv gives their verdicts). Two small strategies
defined here raise output biases by fixed amounts: one fixes the violated property and keeps the
others, one fixes it and breaks a property that held (checked in onnxruntime).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import verirepair
from verirepair.bench.suites import suite_files
from verirepair.cli import main
from verirepair.errors import InputError, NotYet
from verirepair.network import load_network, run_onnxruntime
from verirepair.repair import RepairCandidate, registry, strategy_named
from verirepair.repair.auto import AutoStrategy
from verirepair.repair.strategy import WithoutPolish
from verirepair.spec import parse_vnnlib

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits_classifier.onnx"
DIGITS_SPECS = [REPO / "specs" / f"digits_robust_0_eps{eps}.vnnlib" for eps in ("0.02", "0.1", "0.12")]  # unsat, unsat, sat
AVOID = REPO / "models" / "collision_avoidance.onnx"
AVOID_SPECS = {name: REPO / "specs" / f"collision_avoidance_{name}.vnnlib" for name in ("close_left", "far_coc", "close_left_clear")}
# Bias changes of the last layer: output 1 always the largest, so the digits properties hold; neither
# weak left (1) nor strong left (3) the smallest, so close_left holds and COC (0) stays far_coc's
# choice; the same with COC raised too, so far_coc (COC the smallest far away) is lost.
RAISED = {
    "digits_all": {1: 1000.0},
    "avoid_fix": {1: 100.0, 3: 100.0},
    "avoid_lose": {0: 200.0, 1: 100.0, 3: 100.0},
}


def raised_biases(path: Path, raise_by: dict[int, float]) -> onnx.ModelProto:
    """The network at ``path`` with its last layer's bias entries raised (``layer2.bias``)."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "layer2.bias":
            bias = numpy_helper.to_array(init).copy()
            for index, amount in raise_by.items():
                bias[index] += amount
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    return model


ASKED: list = []  # the problems `RaisedBiases` was handed, in order


class RaisedBiases(WithoutPolish):
    """Always the same candidate: the original with `RAISED` biases; records what it was asked."""

    name = "raised-biases"

    def __init__(self, which: str) -> None:
        self.which = which

    def repair(self, problem, previous, deadline):
        ASKED.append(problem)
        return RepairCandidate(raised_biases(problem.original.path, RAISED[self.which]))


def _factory(which: str):
    return lambda: RaisedBiases(which)


@pytest.fixture(autouse=True)
def stub_strategies(monkeypatch: pytest.MonkeyPatch):
    """`RaisedBiases` under the names ``raise-<which>`` for the CLI and the API."""
    ASKED.clear()
    for which in RAISED:
        module = f"_stub_{which}"
        monkeypatch.setitem(registry.STRATEGIES, f"raise-{which}", (__name__, module))
        monkeypatch.setitem(globals(), module, _factory(which))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main(["-q", "check-and-fix", *argv, "--json", "--samples", "200", "--budget", "120"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else {}), captured.err


def _rows(report: dict) -> dict[str, tuple[str, str | None]]:
    return {Path(str(row["property"])).name: (row["before"], row["after"]) for row in report["properties"]}


def test_a_suite_is_repaired_together_and_the_written_file_is_proven_on_every_property(tmp_path, capsys):
    out = tmp_path / "fixed.onnx"
    code, report, _ = _run([str(DIGITS), *map(str, DIGITS_SPECS), "-o", str(out), "--strategy", "raise-digits_all"],
                           capsys)
    assert code == 0 and report["status"] == "repaired" and report["written"] == str(out)
    assert _rows(report) == {"digits_robust_0_eps0.02.vnnlib": ("unsat", "unsat"),
                             "digits_robust_0_eps0.1.vnnlib": ("unsat", "unsat"),
                             "digits_robust_0_eps0.12.vnnlib": ("sat", "unsat")}
    assert report["suite"] == {"properties": 3, "held_before": 2, "violated_before": 1, "undecided_before": 0,
                               "proven_after": 3, "lost": 0, "violated_after": 0, "unknown_after": 0}
    # the strategy was handed the violated property alone
    assert [p.spec.source for p in ASKED] == [str(DIGITS_SPECS[2])]
    # ... and every property its candidate must be proven on, in the suite's order
    assert [[spec.source for spec in p.suite] for p in ASKED] == [[str(spec) for spec in DIGITS_SPECS]]
    for spec in DIGITS_SPECS:  # the written file, verified on its own
        assert verirepair.verify(out, spec, timeout=60).status == "unsat"


def test_a_candidate_that_loses_a_held_property_is_not_written(tmp_path, capsys):
    candidate = tmp_path / "candidate.onnx"
    onnx.save(raised_biases(AVOID, RAISED["avoid_lose"]), str(candidate))
    # the oracle: onnxruntime finds far_coc violated by the candidate, and close_left is proven on it
    far_coc = parse_vnnlib(AVOID_SPECS["far_coc"])
    box = far_coc.regions[0].box
    x = box.lower + np.random.default_rng(0).random((50, box.dim)) * (box.upper - box.lower)
    y = run_onnxruntime(load_network(candidate), x)
    assert any(far_coc.violation_at(p, q) for p, q in zip(x, y))
    assert verirepair.verify(candidate, AVOID_SPECS["close_left"], timeout=60).status == "unsat"

    out = tmp_path / "fixed.onnx"
    code, report, _ = _run([*map(str, AVOID_SPECS.values()), str(AVOID), "-o", str(out),
                            "--strategy", "raise-avoid_lose"], capsys)
    assert code == 20 and report["status"] == "not-proven" and not out.exists()
    assert _rows(report) == {"collision_avoidance_close_left.vnnlib": ("sat", "unsat"),
                             "collision_avoidance_far_coc.vnnlib": ("unsat", "sat"),
                             "collision_avoidance_close_left_clear.vnnlib": ("unsat", "unsat")}
    assert report["suite"]["lost"] == 1 and report["suite"]["proven_after"] == 2
    assert any("loses" in note and "far_coc" in note for note in report["notes"])
    # the lost property's counterexample went back to the strategy, with that property to repair
    second = ASKED[1]
    lost_at = second.counterexamples[1]
    assert len(second.counterexamples) == 2
    assert far_coc.violation_at(lost_at, run_onnxruntime(load_network(candidate), lost_at[None])[0])
    assert len(second.spec.regions) == len(parse_vnnlib(AVOID_SPECS["close_left"]).regions) + len(far_coc.regions)


def test_a_suite_repaired_by_a_real_strategy_is_proven_on_every_property(tmp_path, capsys):
    out = tmp_path / "fixed.onnx"
    code, report, _ = _run([str(AVOID), *map(str, AVOID_SPECS.values()), "-o", str(out),
                            "--strategy", "birdnn-finetune", "--no-polish"], capsys)
    assert code == 0 and report["status"] == "repaired" and report["suite"]["proven_after"] == 3
    for spec in AVOID_SPECS.values():
        assert verirepair.verify(out, spec, timeout=60).status == "unsat"


def test_folders_and_instance_lists_give_the_suite_of_the_files(tmp_path, capsys):
    folder = tmp_path / "props"
    folder.mkdir()
    for name, path in AVOID_SPECS.items():
        if name == "far_coc":  # one of them compressed
            (folder / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        else:
            shutil.copy(path, folder / path.name)
    (folder / "README.txt").write_text("not a property")
    csv = tmp_path / "instances.csv"
    rows = [f"{os.path.relpath(AVOID, tmp_path)},{os.path.relpath(spec, tmp_path)},60" for spec in sorted(AVOID_SPECS.values())]
    csv.write_text("\n".join(rows) + "\n")

    listed = suite_files([AVOID, *sorted(AVOID_SPECS.values())])
    in_folder, in_csv = suite_files([folder]), suite_files([csv])
    assert listed.network == AVOID and in_folder.network is None and in_csv.network.resolve() == AVOID.resolve()
    assert [p.name.removesuffix(".gz") for p in in_folder.properties] == [p.name for p in listed.properties]
    assert [p.resolve() for p in in_csv.properties] == [p.resolve() for p in listed.properties]

    reports = []
    for argv in ([str(AVOID), *map(str, sorted(AVOID_SPECS.values()))], [str(folder), str(AVOID)], [str(csv)]):
        code, report, _ = _run([*argv, "--strategy", "raise-avoid_fix"], capsys)
        assert code == 0 and report["status"] == "repaired"
        reports.append({Path(str(row["property"])).name.removesuffix(".gz"): (row["before"], row["after"])
                        for row in report["properties"]})
    assert reports[0] == reports[1] == reports[2] == {
        "collision_avoidance_close_left.vnnlib": ("sat", "unsat"), "collision_avoidance_far_coc.vnnlib": ("unsat", "unsat"),
        "collision_avoidance_close_left_clear.vnnlib": ("unsat", "unsat")}


def test_the_api_repairs_a_list_of_properties(tmp_path):
    out = tmp_path / "fixed.onnx"
    report = verirepair.check_and_fix(AVOID, list(AVOID_SPECS.values()), strategy="raise-avoid_fix", output=out,
                                      budget=120, side_effect_samples=200)
    assert report.status == "repaired" and report.suite["proven_after"] == 3 and out.exists()
    with pytest.raises(NotYet, match="suite"):
        verirepair.check_and_fix(AVOID, list(AVOID_SPECS.values()), certificate=tmp_path / "proof.json")
    other = tmp_path / "instances.csv"
    other.write_text(f"{DIGITS},{DIGITS_SPECS[0]},60\n")
    with pytest.raises(InputError, match="names the network"):
        verirepair.check_and_fix(AVOID, [AVOID_SPECS["far_coc"], other])


def test_auto_on_a_suite_takes_the_suite_portfolio(monkeypatch, capsys):
    seen = []

    def record(onnx_path, vnnlib_paths, strategy, settings):
        seen.append(strategy)
        raise InputError(None, None, "stopped by the test")

    monkeypatch.setattr("verirepair.repair.check_and_fix_suite", record)
    assert main(["-q", "check-and-fix", str(AVOID), *map(str, AVOID_SPECS.values())]) == 2
    assert isinstance(seen[0], AutoStrategy) and seen[0].suite
    assert not strategy_named("auto").suite


@pytest.mark.parametrize("case", ["missing", "two networks", "input size"])
def test_bad_suites_are_one_line_and_exit_2(case, tmp_path, capsys):
    specs = [str(p) for p in AVOID_SPECS.values()]
    if case == "missing":
        argv, named = [str(AVOID), *specs, str(tmp_path / "gone.vnnlib")], "gone.vnnlib"
    elif case == "two networks":
        csv = tmp_path / "instances.csv"
        csv.write_text(f"{AVOID},{specs[0]},60\n{DIGITS},{DIGITS_SPECS[0]},60\n")
        argv, named = [str(csv)], "digits_classifier.onnx"
    else:
        argv, named = [str(AVOID), *specs, str(DIGITS_SPECS[0])], "digits_robust_0_eps0.02.vnnlib"
    code = main(["-q", "check-and-fix", *argv, "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out.onnx").exists()


class CannedVerifier:
    """A stand-in for the verifier: per property name, a violation found at once, a proof found at
    once, or a proof that needs the whole timeout (undecided within a screening); records each call."""

    def __init__(self, kinds: dict[str, str], full: float) -> None:
        self.kinds, self.full, self.calls = kinds, full, []

    def __call__(self, network, spec, settings, deadline):
        from verirepair.verify.result import Counterexample, Verdict

        self.calls.append((spec, settings.timeout))
        kind = self.kinds[spec]
        if kind == "violated":
            return Verdict("sat", "pgd", 0.1, Counterexample(np.zeros(1), np.zeros(1)))
        if kind == "easy" or settings.timeout >= self.full:
            return Verdict("unsat", "crown", 0.1)
        return Verdict("timeout", "undecided", settings.timeout)


@pytest.mark.parametrize("kinds, expected, verified_again", [
    ({"a": "violated", "b": "hard", "c": "easy"}, ["sat", "unknown", "unsat"], []),
    ({"a": "easy", "b": "hard", "c": "easy"}, ["unsat", "unsat", "unsat"], ["b"]),
])
def test_a_candidate_is_screened_and_only_a_candidate_without_violation_verified_in_full(monkeypatch, kinds, expected,
                                                                                         verified_again):
    from verirepair.repair import loop
    from verirepair.repair.report import RepairReport
    from verirepair.verify import Deadline

    settings = loop.RepairSettings(verify_timeout=50.0, screen_share=0.2)
    canned = CannedVerifier(kinds, full=50.0)
    monkeypatch.setattr(loop, "verify", canned)
    report = RepairReport("net.onnx", "suite", "test", "not-proven", "sat")
    verdicts = loop._screened(None, ["a", "b", "c"], settings, Deadline(1000.0), report)
    assert [v.status for v in verdicts] == expected
    screened = [(spec, timeout) for spec, timeout in canned.calls[:3]]
    assert screened == [(spec, pytest.approx(10.0)) for spec in "abc"]
    assert [spec for spec, timeout in canned.calls[3:]] == verified_again
    assert all(timeout == pytest.approx(50.0) for _, timeout in canned.calls[3:])
    if "unknown" in expected:
        assert "screening found another property violated" in verdicts[1].notes[-1]
