"""Run a VNN-COMP instance list: each instance in its own process under a hard wall-clock limit.

A crash, out-of-memory kill or hang of one instance is recorded as ``error``/``timeout`` for that
instance and the run goes on. Finished instances (a ``.json`` record in the output folder, see
`records`) are skipped on a rerun, so an interrupted run resumes where it stopped. SIGINT and
SIGTERM stop the run cleanly: the running instances are killed and get no record (a rerun runs
them again), and `run_instances` raises `BenchInterrupted`. The instances run in their own
session, so a signal to the terminal's process group reaches only the runner, which alone decides
what was finished. An instance also ends itself as soon as the process that started it dies (its
lifeline, a pipe whose only writer is that process, reads end-of-file), so not even a SIGKILL of
the runner leaves an instance running.

Each instance is a process forked from a fork server that imported torch, onnxruntime and the
verifier once, calling `verirepair.verify.verify_files` in that process: a fresh interpreter per
instance would spend longer starting up and importing than most ACAS Xu instances take to verify.
`outcome_of` is the one way an instance runs, here and on a Ray cluster (`ray_runner`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, SettingsError
from ..files import atomic_write_text
from .instances import Instance
from .progress import Progress
from .records import (
    InstanceOutcome,
    InstanceRecord,
    finished_records,
    instance_stem,
    save_outcome,
)
from .witness_check import check_witness

if TYPE_CHECKING:
    from ..verify import VerifySettings

# Seconds granted beyond the instance timeout before the process is killed: forking the process
# and reporting its answer lie outside the verifier's own deadline, and a loaded machine is slow.
KILL_GRACE = 15.0
_FORK_SERVER = multiprocessing.get_context("forkserver")
_FORK_SERVER.set_forkserver_preload(["torch", "onnxruntime", "verirepair.verify"])
# How often a waiting worker looks whether the run was stopped.
STOP_POLL_SECONDS = 0.2


class BenchInterrupted(Exception):
    """A signal stopped the run. Finished instances keep their records; the rest have none."""

    def __init__(self, signum: int, finished: int, total: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}: {finished} of {total} instances finished")
        self.signum, self.finished, self.total = signum, finished, total


@dataclass(frozen=True)
class VerifyOptions:
    """The verifier settings every instance of a run gets, besides its own timeout."""

    device: str = "cpu"
    milp_solver: str = "auto"

    def settings(self, timeout: float) -> VerifySettings:
        from ..verify import VerifySettings

        return VerifySettings(timeout=timeout, device=self.device, milp_solver=self.milp_solver)


def _verify_in_child(instance: Instance, settings: VerifySettings, results_file: str, stdout: str, stderr: str,
                     threads: int, lifeline: Connection) -> None:
    """The forked process: `_print_answer` with its output in files, on ``threads`` threads, in a
    session of its own, ending at once when ``lifeline`` closes (see the module docstring)."""
    os.setsid()
    threading.Thread(target=_kill_self_when_closed, args=(lifeline,), daemon=True).start()
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    import torch

    torch.set_num_threads(threads)
    code = _print_answer(instance, settings, Path(results_file))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_answer(instance: Instance, settings: VerifySettings, results_file: Path) -> int:
    """Verify the instance, write its VNN-COMP results file and print the answer as one JSON line;
    exit code 0. A failure is one line on standard error instead: 2 for bad input, 3 otherwise."""
    from ..verify import format_witness, verify_files

    try:
        verdict = verify_files(instance.onnx, instance.vnnlib, settings)
    except (InputError, SettingsError) as error:
        print(f"verirepair: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one instance's failure is its record, not the run's end
        reason = " ".join(str(error).split()) or "no message"
        print(f"verirepair: internal error: {type(error).__name__}: {reason}", file=sys.stderr)
        return 3
    found = verdict.counterexample
    atomic_write_text(results_file, verdict.status + "\n" + (format_witness(found) + "\n" if found is not None else ""))
    peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    print(json.dumps({"result": verdict.status, "seconds": round(verdict.seconds, 3),
                      "decided_by": verdict.decided_by, "peak_memory_mb": peak_memory_mb}))
    return 0


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


def outcome_of(instance: Instance, scratch: Path, timeout_scale: float, threads: int,
               options: VerifyOptions = VerifyOptions(), kill_grace: float = KILL_GRACE,
               stop: threading.Event | None = None) -> InstanceOutcome | None:
    """Run one instance in a forked process, its files in the folder ``scratch``, and check its
    answer: the witness of a sat, the timeout of any answer. None, leaving nothing in ``scratch``,
    when ``stop`` was set before it finished."""
    stop = stop or threading.Event()
    if stop.is_set():
        return None
    stem = instance_stem(instance)
    results_file, stdout, stderr = (scratch / f"{stem}{suffix}" for suffix in (".txt", ".stdout", ".stderr"))
    timeout = instance.timeout * timeout_scale
    started = time.monotonic()
    decided_by, peak = "", 0.0
    lifeline, lifeline_end = _FORK_SERVER.Pipe(duplex=False)
    child = _FORK_SERVER.Process(target=_verify_in_child, args=(
        instance, options.settings(timeout), str(results_file), str(stdout), str(stderr), threads, lifeline))
    child.start()
    lifeline.close()
    hard_limit = started + timeout + kill_grace
    while child.is_alive() and not stop.is_set() and time.monotonic() < hard_limit:
        child.join(min(STOP_POLL_SECONDS, max(0.0, hard_limit - time.monotonic())))
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
    results_text = results_file.read_text() if results_file.exists() else None
    witness_ok = None
    if result == "sat":
        try:
            witness_ok, reason = check_witness(instance.onnx, instance.vnnlib, results_text or "", tolerance=0.0)
        except (OSError, ValueError, KeyError) as error:
            witness_ok, reason = False, str(error)
        if not witness_ok:
            decided_by += f"; witness check failed: {reason}"
    result, decided_by = within_timeout(result, decided_by, seconds, timeout)
    record = InstanceRecord(instance.index, instance.onnx_text, instance.vnnlib_text, result,
                            round(seconds, 3), decided_by, peak, witness_ok)
    return InstanceOutcome(record, results_text)


def run_instance(instance: Instance, out: Path, timeout_scale: float, threads: int,
                 options: VerifyOptions = VerifyOptions(), kill_grace: float = KILL_GRACE,
                 stop: threading.Event | None = None) -> InstanceRecord | None:
    """Run one instance with its files in ``out`` and write its record; None, with no record
    written, when ``stop`` was set before it finished."""
    outcome = outcome_of(instance, out, timeout_scale, threads, options, kill_grace, stop)
    if outcome is None:
        return None
    save_outcome(out, instance, outcome)
    return outcome.record


def run_instances(instances: list[Instance], out: Path, timeout_scale: float = 1.0,
                  workers: int = 1, threads: int | None = None,
                  options: VerifyOptions = VerifyOptions()) -> list[InstanceRecord]:
    """Run (or resume) every instance; returns the records in instance order. Each instance
    gets ``threads`` math threads (default: the cores shared out among the workers) and the
    verifier options ``options`` (device, MILP solver)."""
    out.mkdir(parents=True, exist_ok=True)
    records, pending = finished_records(instances, out)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    stop, signals = threading.Event(), []
    with stopping_on_signals(stop, signals), Progress(len(instances), len(records)) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_instance, i, out, timeout_scale, threads, options, stop=stop) for i in pending]
        for future in as_completed(futures):
            record = future.result()
            if record is None:
                continue
            records[record.index] = record
            progress.finished(record)
    if signals:
        raise BenchInterrupted(signals[0], len(records), len(instances))
    return [records[i.index] for i in instances]


@contextmanager
def stopping_on_signals(stop: threading.Event, received: list[int]) -> Iterator[None]:
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
