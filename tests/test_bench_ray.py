"""`verirepair bench --ray`: on a Ray cluster of 2 CPUs begun by `ray start --head`, the same
results.csv rows as the local runner, resume across the two, and a clean stop on a signal."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verirepair.cli import main

REPO = Path(__file__).resolve().parents[1]
# Quick shipped instances, two of each answer (specs/expected.csv has the answers).
SHIPPED = [("models/collision_avoidance.onnx", "specs/collision_avoidance_close_left.vnnlib"),
           ("models/collision_avoidance.onnx", "specs/collision_avoidance_far_coc.vnnlib"),
           ("models/tanh_controller.onnx", "specs/tanh_controller_steering_limit.vnnlib"),
           ("models/tanh_controller.onnx", "specs/tanh_controller_steer_back.vnnlib")]
# ACAS Xu instances decided in about a second each (ground truth: sat, sat, unsat).
ACASXU = [("ACASXU_run2a_2_1_batch_2000", "prop_2"), ("ACASXU_run2a_4_5_batch_2000", "prop_2"),
          ("ACASXU_run2a_3_1_batch_2000", "prop_4")]
# The result columns of results.csv: the times (and which method decided) may differ between runs.
RESULT_COLUMNS = ("onnx", "vnnlib", "result", "witness_ok", "expected", "score")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a Ray head with 2 CPUs, begun with `ray start --head --block` in a session of
    its own and ended with everything in that session (`ray stop` would end every Ray instance of
    the user on the machine, not just this one)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install 'verirepair[ray]'")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("ray") / "head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--num-cpus", "2", "--port", str(port),
             "--ray-client-server-port", str(_free_port()), "--include-dashboard=false", "--disable-usage-stats",
             "--block"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        give_up = time.monotonic() + 180
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > give_up:
                pytest.fail(f"ray start --head did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops the processes it started, then itself
        try:
            head.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever of its session is left
                os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def _instances_csv(folder: Path, pairs: list[tuple[Path, Path]], timeout: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "instances.csv"
    path.write_text("".join(f"{onnx},{vnnlib},{timeout:g}\n" for onnx, vnnlib in pairs))
    return path


def _result_rows(out: Path) -> list[tuple[str, ...]]:
    with (out / "results.csv").open(newline="") as stream:
        return [tuple(row[column] for column in RESULT_COLUMNS) for row in csv.DictReader(stream)]


def _shipped_suite(folder: Path) -> tuple[Path, Path]:
    """instances.csv and a ground truth for `SHIPPED`, the truth taken from specs/expected.csv."""
    pairs = [(REPO / onnx, REPO / vnnlib) for onnx, vnnlib in SHIPPED]
    instances = _instances_csv(folder, pairs, 60)
    with (REPO / "specs" / "expected.csv").open(newline="") as stream:
        expected = {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(stream)}
    truth = folder / "truth.csv"
    truth.write_text("onnx,vnnlib,result\n" + "".join(f"{REPO / o},{REPO / v},{expected[o, v]}\n" for o, v in SHIPPED))
    return instances, truth


def _bench(instances: Path, truth: Path, out: Path, *extra: str) -> None:
    assert main(["bench", str(instances), "--ground-truth", str(truth), "--out", str(out), "--threads", "1", *extra]) == 0


def _assert_same_results_and_all_correct(local: Path, on_ray: Path) -> None:
    rows = _result_rows(on_ray)
    assert rows == _result_rows(local)
    # and both are right: every answer is the known one, every witness passes the independent check
    assert all(row[2] == row[4] and row[5] == "10" for row in rows), rows
    assert all(row[3] == ("True" if row[2] == "sat" else "") for row in rows), rows


def test_ray_gives_the_local_runners_results_on_shipped_models(cluster: str, tmp_path: Path) -> None:
    instances, truth = _shipped_suite(tmp_path)
    _bench(instances, truth, tmp_path / "local")
    _bench(instances, truth, tmp_path / "ray", "--ray", cluster)
    _assert_same_results_and_all_correct(tmp_path / "local", tmp_path / "ray")
    # the same files per instance: a record and a results file each
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())


def test_ray_gives_the_local_runners_results_on_acasxu(cluster: str, benchmarks: Path, tmp_path: Path) -> None:
    acasxu = benchmarks / "acasxu"
    pairs = [(acasxu / "onnx" / f"{net}.onnx", acasxu / "vnnlib" / f"{prop}.vnnlib") for net, prop in ACASXU]
    instances = _instances_csv(tmp_path, pairs, 60)
    truth = acasxu / "ground_truth.csv"
    _bench(instances, truth, tmp_path / "local")
    _bench(instances, truth, tmp_path / "ray", "--ray", cluster)
    _assert_same_results_and_all_correct(tmp_path / "local", tmp_path / "ray")


def test_ray_resumes_a_local_run(cluster: str, tmp_path: Path) -> None:
    """A local run that finished all but one instance, finished on Ray: only that one runs."""
    instances, truth = _shipped_suite(tmp_path)
    out = tmp_path / "out"
    _bench(instances, truth, out)
    local_rows = _result_rows(out)
    records = sorted(out.glob("*.json"))
    records[1].unlink()  # as if the run had stopped before the second instance finished
    kept = {p: p.stat().st_mtime_ns for p in records if p.exists()}
    _bench(instances, truth, out, "--ray", cluster)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "a finished instance ran again"
    assert records[1].exists()
    assert _result_rows(out) == local_rows


def _processes_in_ray_scratch(network: str) -> list[int]:
    """Pids of processes whose standard output is a file in a Ray task's scratch folder, of an
    instance of ``network`` (Linux /proc): other tests' instances, on another pytest-xdist worker
    at the same time, run other networks."""
    scratch = str(Path(tempfile.gettempdir()) / "verirepair-bench-")
    pids = []
    for fd in Path("/proc").glob("[0-9]*/fd/1"):
        try:
            target = os.readlink(fd)
            if target.startswith(scratch) and f"_{network}_" in Path(target).name:
                pids.append(int(fd.parts[2]))
        except OSError:  # the process ended while we looked
            continue
    return pids


NETWORK = "mnist-net_256x6"  # no other test runs it on Ray


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the instance's process through Linux /proc")
def test_a_signal_cancels_the_ray_tasks_and_records_nothing_for_them(
        cluster: str, benchmarks: Path, tmp_path: Path) -> None:
    mnist = benchmarks / "mnist_fc"  # 256x6 prop_2 at eps 0.05 takes minutes: surely running when stopped
    instances = _instances_csv(tmp_path, [(mnist / f"onnx/{NETWORK}.onnx", mnist / "vnnlib/prop_2_0.05.vnnlib")], 300)
    out = tmp_path / "out"
    bench = subprocess.Popen([sys.executable, "-m", "verirepair", "bench", str(instances), "--out", str(out),
                              "--threads", "1", "--ray", cluster], stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while not _processes_in_ray_scratch(NETWORK):
            if bench.poll() is not None or time.monotonic() - started > 180:
                pytest.fail("the instance never started")
            time.sleep(0.2)
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == (
        f"verirepair: bench stopped by SIGTERM: 0 of 1 instances finished; "
        f"their records are in {out}, rerun the same command to resume")
    gone_by = time.monotonic() + 30
    while _processes_in_ray_scratch(NETWORK) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not _processes_in_ray_scratch(NETWORK), "the instance's process outlived its cancelled task"
    assert list(out.iterdir()) == [], "a cancelled instance left a record behind"


def test_bench_ray_without_ray_installed_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    instances, _ = _shipped_suite(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    assert main(["bench", str(instances), "--out", str(tmp_path / "out"), "--ray", "auto"]) == 2
    assert capsys.readouterr().err.splitlines() == ["verirepair: error: ray is not installed (needed for bench --ray): pip install 'verirepair[ray]'"]
    assert not (tmp_path / "out").exists()


def test_bench_ray_with_no_cluster_at_the_address_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install 'verirepair[ray]'")
    instances, _ = _shipped_suite(tmp_path)
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    assert main(["bench", str(instances), "--out", str(tmp_path / "out"), "--ray", address]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"verirepair: error: --ray: no Ray cluster reachable at '{address}'"), err
    assert not (tmp_path / "out").exists()


def test_bench_ray_auto_names_where_it_led(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install 'verirepair[ray]'")
    instances, _ = _shipped_suite(tmp_path)
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert main(["bench", str(instances), "--out", str(tmp_path / "out"), "--ray", "auto"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"no Ray cluster reachable at '{address}' (where auto leads: RAY_ADDRESS" in err[0], err
