"""Run a VNN-COMP instance list: each instance in its own process under a hard wall-clock limit.

A crash, out-of-memory kill or hang of one instance is recorded as ``error``/``timeout`` for that
instance and the run goes on. Finished instances (a ``.json`` record in the output folder) are
skipped on a rerun, so an interrupted run resumes where it stopped. SIGINT and SIGTERM stop the run
cleanly: the running instances are killed and get no record (a rerun runs them again), and
`run_instances` raises `BenchInterrupted`. The instances run in their own session, so a signal to
the terminal's process group reaches only the runner, which alone decides what was finished. An
instance also ends itself as soon as the runner dies (its lifeline, a pipe whose only writer is
the runner, reads end-of-file), so not even a SIGKILL of the runner leaves an instance running.

Each instance is a process forked from a fork server that imported torch, onnxruntime and the
verifier once, running the same `verirepair verify` command line as a fresh interpreter would.
A fresh interpreter spent about 1.4 s per instance starting up and importing (ACAS Xu: 1.7 s of
wall time for a 0.3 s verification), more than most ACAS Xu instances take to verify.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from tqdm import tqdm

from ..files import atomic_write_text
from .instances import Instance
from .witness_check import check_witness

# Seconds granted beyond the instance timeout before the process is killed: forking the process
# and printing its results lie outside the verifier's own deadline, and a loaded machine is slow.
KILL_GRACE = 15.0
_FORK_SERVER = multiprocessing.get_context("forkserver")
_FORK_SERVER.set_forkserver_preload(["torch", "onnxruntime", "verirepair.cli", "verirepair.verify"])
# How often a waiting worker looks whether the run was stopped.
_STOP_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class InstanceRecord:
    index: int
    onnx: str
    vnnlib: str
    result: str
    seconds: float
    decided_by: str
    peak_memory_mb: float
    witness_ok: bool | None  # for sat: the independent VNN-COMP check at zero tolerance; None otherwise


def _instance_stem(instance: Instance) -> str:
    onnx, vnnlib = Path(instance.onnx_text).stem, Path(instance.vnnlib_text).stem
    return f"{instance.index:04d}_{onnx}_{vnnlib}"


class BenchInterrupted(Exception):
    """A signal stopped the run. Finished instances keep their records; the rest have none."""

    def __init__(self, signum: int, finished: int, total: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}: {finished} of {total} instances finished")
        self.signum, self.finished, self.total = signum, finished, total


def _verify_in_child(argv: list[str], stdout: str, stderr: str, threads: int, lifeline: Connection) -> None:
    """The forked process: `verirepair verify` with its output in files, on ``threads`` threads,
    in a session of its own, ending at once when ``lifeline`` closes (see the module docstring)."""
    os.setsid()
    threading.Thread(target=_kill_self_when_closed, args=(lifeline,), daemon=True).start()
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    import torch

    from ..cli import main

    torch.set_num_threads(threads)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _kill_self_when_closed(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: this returns only at end-of-file
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def within_timeout(result: str, decided_by: str, seconds: float, timeout: float) -> tuple[str, str]:
    """An answer given after the instance's timeout counts as a timeout, as VNN-COMP scores it; the
    answer stays in ``decided_by`` for the record."""
    if result in ("sat", "unsat") and seconds > timeout:
        return "timeout", f"{decided_by}; answered {result} after {seconds:.3f} s, over the {timeout:g} s timeout"
    return result, decided_by


@dataclass(frozen=True)
class VerifyOptions:
    """The `verirepair verify` options every instance of a run gets."""

    device: str = "cpu"
    milp_solver: str = "auto"

    def argv(self) -> list[str]:
        return ["--device", self.device, "--milp-solver", self.milp_solver]


def run_instance(instance: Instance, out: Path, timeout_scale: float, threads: int,
                 options: VerifyOptions = VerifyOptions(), kill_grace: float = KILL_GRACE,
                 stop: threading.Event | None = None) -> InstanceRecord | None:
    """Run one instance and write its record; None, with no record written, when ``stop`` was set
    before it finished."""
    stop = stop or threading.Event()
    if stop.is_set():
        return None
    stem = _instance_stem(instance)
    results_file, stdout, stderr = (out / f"{stem}{suffix}" for suffix in (".txt", ".stdout", ".stderr"))
    timeout = instance.timeout * timeout_scale
    argv = ["verify", str(instance.onnx), str(instance.vnnlib), "--timeout", str(timeout),
            "--results-file", str(results_file), "--json", *options.argv()]
    started = time.monotonic()
    decided_by, peak = "", 0.0
    lifeline, lifeline_end = _FORK_SERVER.Pipe(duplex=False)
    child = _FORK_SERVER.Process(target=_verify_in_child, args=(argv, str(stdout), str(stderr), threads, lifeline))
    child.start()
    lifeline.close()
    hard_limit = started + timeout + kill_grace
    while child.is_alive() and not stop.is_set() and time.monotonic() < hard_limit:
        child.join(min(_STOP_POLL_SECONDS, max(0.0, hard_limit - time.monotonic())))
    alive = child.is_alive()
    if alive:
        child.kill()
    child.join()
    lifeline_end.close()
    if alive:
        if stop.is_set():
            for path in (stdout, stderr, results_file):
                path.unlink(missing_ok=True)
            return None
        result, seconds, decided_by = "timeout", time.monotonic() - started, "killed at the hard limit"
    else:
        seconds = time.monotonic() - started
        try:
            summary = json.loads(stdout.read_text().strip().splitlines()[-1])
            result, decided_by = summary["result"], summary["decided_by"]
            peak = float(summary.get("peak_memory_mb", 0.0))
            seconds = float(summary["seconds"])
        except (OSError, IndexError, ValueError, KeyError):
            result = "error"
            lines = stderr.read_text().strip().splitlines() if stderr.exists() else []
            decided_by = (lines or [f"exit code {child.exitcode}"])[-1][:200]
    for path in (stdout, stderr):
        path.unlink(missing_ok=True)
    witness_ok = None
    if result == "sat":
        try:
            witness_ok, reason = check_witness(instance.onnx, instance.vnnlib, results_file.read_text(), tolerance=0.0)
        except (OSError, ValueError, KeyError) as error:
            witness_ok, reason = False, str(error)
        if not witness_ok:
            decided_by += f"; witness check failed: {reason}"
    result, decided_by = within_timeout(result, decided_by, seconds, timeout)
    record = InstanceRecord(instance.index, instance.onnx_text, instance.vnnlib_text, result,
                            round(seconds, 3), decided_by, peak, witness_ok)
    atomic_write_text(out / f"{stem}.json", json.dumps(asdict(record)))
    return record


def run_instances(instances: list[Instance], out: Path, timeout_scale: float = 1.0,
                  workers: int = 1, threads: int | None = None,
                  options: VerifyOptions = VerifyOptions()) -> list[InstanceRecord]:
    """Run (or resume) every instance; returns the records in instance order. Each instance
    gets ``threads`` math threads (default: the cores shared out among the workers) and the
    `verirepair verify` options ``options`` (device, MILP solver)."""
    out.mkdir(parents=True, exist_ok=True)
    records: dict[int, InstanceRecord] = {}
    pending = []
    for instance in instances:
        done = out / f"{_instance_stem(instance)}.json"
        if done.exists():
            records[instance.index] = InstanceRecord(**json.loads(done.read_text()))
        else:
            pending.append(instance)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    stop, signals = threading.Event(), []
    with _stopping_on_signals(stop, signals), \
            tqdm(total=len(instances), initial=len(records), desc="instances", unit="inst") as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_instance, i, out, timeout_scale, threads, options, stop=stop) for i in pending]
        for future in as_completed(futures):
            record = future.result()
            if record is None:
                continue
            records[record.index] = record
            progress.set_postfix_str(f"{record.result} {Path(record.onnx).stem[:24]}/{Path(record.vnnlib).stem}")
            progress.update()
    if signals:
        raise BenchInterrupted(signals[0], len(records), len(instances))
    return [records[i.index] for i in instances]


@contextmanager
def _stopping_on_signals(stop: threading.Event, received: list[int]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` and are appended to ``received`` instead of
    ending the process at once, so that workers can kill their instances without recording them.
    Handlers can only be installed from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
