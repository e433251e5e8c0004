"""The live progress line: drawn in place on a terminal with every field, throttled, cleared at the
end, silent on a pipe and under -q; the searches decide exactly as without it."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from verirepair import progress
from verirepair.cli import main
from verirepair.verify import VerifySettings, verify
from verirepair.verify.pipeline import load_problem

ROOT = Path(__file__).resolve().parents[1]
# specs/expected.csv: both hold; the first is decided by input split, the second by ReLU split.
INPUT_SPLIT = (ROOT / "models" / "collision_avoidance.onnx", ROOT / "specs" / "collision_avoidance_far_coc.vnnlib")
RELU_SPLIT = (ROOT / "models" / "digits_classifier.onnx", ROOT / "specs" / "digits_robust_0_eps0.1.vnnlib")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def visible(written: str) -> str:
    """What a terminal shows after ``written``: the text after the last carriage return that
    is followed by more text (a trailing ``\\r`` only moves the cursor)."""
    return written.rstrip("\r").rsplit("\r", 1)[-1]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_line_shows_stage_phase_branches_bound_and_elapsed_over_budget() -> None:
    stream, clock = FakeTerminal(), Clock()
    line = progress.ProgressLine(stream, budget=600, clock=clock)
    with progress.showing(line):
        progress.stage("re-verify", 2)
        clock.now += 12.4
        progress.search("input-split", 1234, lambda: -0.03125)
        shown = visible(stream.getvalue())
    assert stream.getvalue().startswith("\r")
    assert shown == "iteration 2 re-verify | input-split: 1234 open, bound -0.03125 | 12/600 s"


def test_line_is_cut_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    stream = FakeTerminal()
    with progress.showing(progress.ProgressLine(stream, budget=600, clock=Clock())):
        progress.search("input-split", 1234, -0.5)
        assert visible(stream.getvalue()) == "input-split: 1234 open, bound"[:29]


def test_line_is_cleared_at_the_end_and_a_shorter_line_blanks_the_longer_one() -> None:
    stream, clock = FakeTerminal(), Clock()
    with progress.showing(progress.ProgressLine(stream, clock=clock)):
        progress.search("relu-split", 100000, -1.0)
        long_width = len(visible(stream.getvalue()))
        clock.now += progress.REDRAW_INTERVAL
        progress.search("milp")
        shown = visible(stream.getvalue())
        assert shown.rstrip() == "milp | 0 s" and len(shown) == long_width
    written = stream.getvalue()
    assert written.endswith("\r" + " " * len(shown.rstrip()) + "\r")


def test_search_updates_are_throttled_and_the_bound_computed_only_when_drawn() -> None:
    stream, clock = FakeTerminal(), Clock()
    calls: list[int] = []

    def bound() -> float:
        calls.append(1)
        return -1.0

    line = progress.ProgressLine(stream, clock=clock)
    with progress.showing(line):
        for phase in ["input-split", "milp"] * 5:  # 10 updates within one redraw interval: one draw
            progress.search(phase, 5, bound)
            clock.now += progress.REDRAW_INTERVAL / 20
        assert stream.getvalue().count("\r") == 1 and len(calls) == 1
        clock.now += progress.REDRAW_INTERVAL
        progress.search("input-split", 4, bound)
        progress.stage("repair", 1)  # a new stage is drawn at once
        assert stream.getvalue().count("\r") == 3 and len(calls) == 2


def test_nothing_is_written_on_a_pipe_or_without_a_line() -> None:
    pipe = io.StringIO()
    assert progress.terminal_line(pipe, 60) is None
    assert isinstance(progress.terminal_line(FakeTerminal(), 60), progress.ProgressLine)
    with progress.showing(progress.terminal_line(pipe, 60)):
        progress.stage("verify")
        progress.search("input-split", 3, lambda: pytest.fail("no line: the bound is never computed"))
    assert pipe.getvalue() == ""


def test_printing_on_stdout_blanks_the_line_first(capsys: pytest.CaptureFixture[str]) -> None:
    stream = FakeTerminal()
    with progress.showing(progress.ProgressLine(stream, clock=Clock())):
        progress.stage("verify")
        width = len(stream.getvalue()) - 1
        print("unsat")
        assert stream.getvalue() == "\r" + "verify | 0 s" + "\r" + " " * width + "\r"
    assert capsys.readouterr().out == "unsat\n"


def test_log_records_blank_the_line_first() -> None:
    stream, clock = FakeTerminal(), Clock()
    handler = progress.LogHandler(stream)
    logger = logging.getLogger("verirepair.test_progress")
    logger.addHandler(handler)
    try:
        with progress.showing(progress.ProgressLine(stream, clock=clock)):
            progress.stage("verify")
            width = len(stream.getvalue()) - 1
            logger.warning("a record")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().endswith("\r" + " " * width + "\r" + "a record\n")


@pytest.mark.parametrize("problem", [INPUT_SPLIT, RELU_SPLIT], ids=["input-split", "relu-split"])
def test_searches_decide_the_same_with_and_without_a_line(problem: tuple[Path, Path]) -> None:
    settings = VerifySettings(timeout=120)
    network, spec = load_problem(*problem, settings)
    alone = verify(network, spec, settings)
    stream = FakeTerminal()
    with progress.showing(progress.ProgressLine(stream, interval=0.0)):
        shown = verify(network, spec, settings)
    assert alone.status == shown.status == "unsat" and alone.decided_by == shown.decided_by
    assert f"{alone.decided_by}: " in stream.getvalue() and " open, bound " in stream.getvalue()


def test_cli_draws_on_a_terminal_and_stays_silent_when_quiet(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    onnx, vnnlib = INPUT_SPLIT
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["verify", str(onnx), str(vnnlib), "--timeout", "60"]) == 0
    written = terminal.getvalue()
    assert "input-split: " in written and "/60 s" in written and written.endswith("\r")  # cleared
    quiet = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["-q", "verify", str(onnx), str(vnnlib), "--timeout", "60"]) == 0
    assert quiet.getvalue() == ""
    assert capsys.readouterr().out.count("unsat") == 2
