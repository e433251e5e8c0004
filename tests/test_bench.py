"""`verirepair bench`: isolated runs, results files, scoring against ground truth, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import HOLDS, VIOLATED

from verirepair.bench import InstanceRecord, check_witness, read_instances, summarise
from verirepair.bench.scoring import CORRECT, WRONG, score_of
from verirepair.cli import main


@pytest.fixture
def suite(tmp_path: Path, tiny_mlp: Path) -> Path:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "vnnlib").mkdir()
    (tmp_path / "onnx" / "net.onnx").write_bytes(tiny_mlp.read_bytes())
    (tmp_path / "vnnlib" / "holds.vnnlib").write_text(HOLDS)
    (tmp_path / "vnnlib" / "violated.vnnlib").write_text(VIOLATED)
    (tmp_path / "instances.csv").write_text("onnx/net.onnx,vnnlib/holds.vnnlib,30\nonnx/net.onnx,vnnlib/violated.vnnlib,30\n")
    # the ground truth deliberately gets the first one wrong, to see the −150
    (tmp_path / "truth.csv").write_text("onnx,vnnlib,result\nonnx/net.onnx,vnnlib/holds.vnnlib,sat\n"
                                        "onnx/net.onnx,vnnlib/violated.vnnlib,sat\n")
    return tmp_path


def test_bench_runs_scores_and_resumes(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = suite / "out"
    args = ["bench", str(suite / "instances.csv"), "--ground-truth", str(suite / "truth.csv"), "--out", str(out)]
    assert main(args) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [r["result"] for r in records] == ["unsat", "sat"]
    assert records[1]["witness_ok"] is True
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("onnx,vnnlib,result") and len(rows) == 3
    assert rows[1].endswith(f",sat,{WRONG}") and rows[2].endswith(f",sat,{CORRECT}")
    table = capsys.readouterr().out
    assert str(WRONG + CORRECT) in table.splitlines()[1].split()[-1]
    # a rerun finds both records and runs nothing: the records are not rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps


def test_bench_hands_its_verify_options_to_every_instance(suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from verirepair.bench import runner
    seen = []

    def fake_run(instance, out, timeout_scale, threads, options, stop):  # type: ignore[no-untyped-def]
        seen.append(options)
        return InstanceRecord(instance.index, instance.onnx_text, instance.vnnlib_text, "unknown", 0.0, "fake", 0.0, None)

    monkeypatch.setattr(runner, "run_instance", fake_run)
    assert main(["bench", str(suite / "instances.csv"), "--out", str(suite / "out4"), "--milp-solver", "highs"]) == 0
    assert seen == [runner.VerifyOptions("cpu", "highs")] * 2
    # and the verifier settings each instance gets from them carry the same choices
    settings = seen[0].settings(7.0)
    assert (settings.device, settings.milp_solver, settings.timeout) == ("cpu", "highs", 7.0)


def test_a_sat_with_a_forged_witness_scores_as_wrong(suite: Path) -> None:
    instance = read_instances(suite / "instances.csv")[1]
    forged = "sat\n((X_0 0.0)\n (X_1 1.0)\n (Y_0 5.0)\n (Y_1 1.0))\n"  # Y_0 is really 0 there
    ok, reason = check_witness(instance.onnx, instance.vnnlib, forged)
    assert not ok and "differs" in reason
    record = InstanceRecord(1, instance.onnx_text, instance.vnnlib_text, "sat", 1.0, "test", 0.0, ok)
    assert score_of(record, "sat") == WRONG
    assert summarise([record], {}).witness_failures == 1


def test_a_crashing_instance_is_an_error_not_a_stopped_run(suite: Path) -> None:
    (suite / "onnx" / "broken.onnx").write_text("not a model")
    (suite / "instances.csv").write_text("onnx/broken.onnx,vnnlib/holds.vnnlib,30\nonnx/net.onnx,vnnlib/holds.vnnlib,30\n")
    out = suite / "out2"
    assert main(["bench", str(suite / "instances.csv"), "--out", str(out)]) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [r["result"] for r in records] == ["error", "unsat"]
    assert "broken.onnx" in records[0]["decided_by"]


def test_an_instance_past_its_hard_limit_is_killed_and_recorded_as_a_timeout(suite: Path) -> None:
    from verirepair.bench.runner import run_instance

    instance = read_instances(suite / "instances.csv")[0]
    out = suite / "out3"
    out.mkdir()
    # a 1 ms limit and no grace: the forked verifier cannot have answered when the limit comes
    record = run_instance(instance, out, timeout_scale=1e-3 / instance.timeout, threads=1, kill_grace=0.0)
    assert (record.result, record.decided_by) == ("timeout", "killed at the hard limit")
    assert json.loads(next(out.glob("*.json")).read_text())["result"] == "timeout"
    assert not list(out.glob("*.stdout")) and not list(out.glob("*.stderr"))


def _processes_writing_into(folder: Path) -> list[int]:
    """Pids of the processes whose standard output is a file in ``folder`` (Linux /proc)."""
    pids = []
    for fd in Path("/proc").glob("[0-9]*/fd/1"):
        try:
            if os.readlink(fd).startswith(str(folder)):
                pids.append(int(fd.parts[2]))
        except OSError:  # the process ended while we looked
            continue
    return pids


def _bench_with_a_running_instance(benchmarks: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """`verirepair bench` in a subprocess, once its one instance is running (mnist_fc 256x6 prop_2
    at eps 0.05 takes minutes, so it is surely still running a second later)."""
    mnist = benchmarks / "mnist_fc"
    (tmp_path / "instances.csv").write_text(
        f"{mnist / 'onnx/mnist-net_256x6.onnx'},{mnist / 'vnnlib/prop_2_0.05.vnnlib'},300\n")
    out = tmp_path / "out"
    bench = subprocess.Popen([sys.executable, "-m", "verirepair", "bench", str(tmp_path / "instances.csv"),
                              "--out", str(out), "--threads", "1"], stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    while not _processes_writing_into(out):
        if bench.poll() is not None or time.monotonic() - started > 60:
            bench.kill()
            pytest.fail("the instance never started")
        time.sleep(0.1)
    time.sleep(1.0)
    return bench, out


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the instance's process through Linux /proc")


@LINUX_PROC
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_kills_the_instance_and_records_nothing_for_it(
        benchmarks: Path, tmp_path: Path, signum: signal.Signals) -> None:
    bench, out = _bench_with_a_running_instance(benchmarks, tmp_path)
    try:
        bench.send_signal(signum)
        _, stderr = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signum
    assert stderr.strip().splitlines()[-1] == (
        f"verirepair: bench stopped by {signum.name}: 0 of 1 instances finished; "
        f"their records are in {out}, rerun the same command to resume")
    assert not _processes_writing_into(out), "the instance's process outlived the run"
    assert list(out.iterdir()) == [], "an interrupted instance left a record or output behind"


@LINUX_PROC
def test_an_instance_does_not_outlive_a_killed_runner(benchmarks: Path, tmp_path: Path) -> None:
    bench, out = _bench_with_a_running_instance(benchmarks, tmp_path)
    bench.kill()  # SIGKILL: the runner cannot clean up; its fork server ends, and with it the instance
    bench.wait()
    gone_by = time.monotonic() + 10
    while _processes_writing_into(out) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not _processes_writing_into(out), "the instance's process outlived its killed runner"
    assert not list(out.glob("*.json")), "a killed instance was recorded as finished"


def test_ground_truth_matches_files_however_the_instance_list_spells_them(
        suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user's instances.csv with absolute paths and the folder's ground truth with relative ones
    (the collins_rul_cnn case, where every `expected` cell stayed empty and a wrong answer scored +10)."""
    mine = suite / "mine"
    mine.mkdir()
    rows = [f"{suite / 'onnx' / 'net.onnx'},{suite / 'vnnlib' / name},30" for name in ("holds.vnnlib", "violated.vnnlib")]
    (mine / "instances.csv").write_text("\n".join(rows) + "\n")
    out = suite / "out_absolute"
    assert main(["bench", str(mine / "instances.csv"), "--ground-truth", str(suite / "truth.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ground truth for 2 of 2 instances" in printed
    rows = (out / "results.csv").read_text().splitlines()
    # truth.csv calls the first instance sat: its unsat must be scored wrong, not +10
    assert rows[1].split(",")[2] == "unsat" and rows[1].endswith(f",sat,{WRONG}"), rows[1]
    assert rows[2].endswith(f",True,sat,{CORRECT}"), rows[2]


def test_ground_truth_that_matches_no_instance_is_refused(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = suite / "elsewhere"
    other.mkdir()
    (other / "truth.csv").write_text("onnx,vnnlib,result\nonnx/net.onnx,vnnlib/holds.vnnlib,unsat\n")
    code = main(["bench", str(suite / "instances.csv"), "--ground-truth", str(other / "truth.csv"),
                 "--out", str(suite / "out_none")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(other / "truth.csv") in err and "matches none of the 2 instances" in err
    assert not (suite / "out_none").exists()  # refused before anything ran


def test_an_answer_after_the_timeout_is_scored_as_a_timeout() -> None:
    from verirepair.bench.runner import within_timeout

    assert within_timeout("unsat", "alpha-crown", 120.009, 120.0)[0] == "timeout"
    assert "answered unsat after 120.009 s" in within_timeout("unsat", "alpha-crown", 120.009, 120.0)[1]
    assert within_timeout("sat", "falsification", 119.9, 120.0) == ("sat", "falsification")
    assert within_timeout("unknown", "undecided", 130.0, 120.0) == ("unknown", "undecided")


def test_progress_off_a_terminal_is_one_line_per_finished_instance() -> None:
    import io

    from verirepair.bench.progress import Progress

    stream = io.StringIO()  # not a terminal
    with Progress(total=3, done=1, stream=stream) as progress:
        progress.finished(InstanceRecord(1, "onnx/net.onnx", "vnnlib/holds.vnnlib", "unsat", 0.3, "crown", 0.0, None))
        progress.finished(InstanceRecord(2, "onnx/net.onnx", "vnnlib/violated.vnnlib", "sat", 1.5, "pgd", 0.0, True))
    assert stream.getvalue().splitlines() == ["[2/3] unsat net/holds (0.3 s)", "[3/3] sat net/violated (1.5 s)"]
