"""Run a VNN-COMP instance list: each instance in its own process under a hard wall-clock limit.

A crash, out-of-memory kill or hang of one instance is recorded as ``error``/``timeout`` for that
instance and the run goes on. Finished instances (a ``.json`` record in the output folder) are
skipped on a rerun, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..files import atomic_write_text
from .instances import Instance
from .witness_check import check_witness

# Seconds granted beyond the instance timeout before the process is killed: interpreter start-up,
# imports and writing results are not part of the verifier's own deadline.
KILL_GRACE = 15.0


@dataclass(frozen=True)
class InstanceRecord:
    index: int
    onnx: str
    vnnlib: str
    result: str
    seconds: float
    decided_by: str
    peak_memory_mb: float
    witness_ok: bool | None  # for sat: the independent VNN-COMP check; None otherwise


def _instance_stem(instance: Instance) -> str:
    onnx, vnnlib = Path(instance.onnx_text).stem, Path(instance.vnnlib_text).stem
    return f"{instance.index:04d}_{onnx}_{vnnlib}"


def run_instance(instance: Instance, out: Path, timeout_scale: float, threads: int, device: str = "cpu") -> InstanceRecord:
    stem = _instance_stem(instance)
    results_file = out / f"{stem}.txt"
    timeout = instance.timeout * timeout_scale
    command = [sys.executable, "-m", "verirepair", "verify", str(instance.onnx), str(instance.vnnlib),
               "--timeout", str(timeout), "--results-file", str(results_file), "--json", "--device", device]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.monotonic()
    decided_by, peak = "", 0.0
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout + KILL_GRACE, env=environment)
        seconds = time.monotonic() - started
        try:
            summary = json.loads(completed.stdout.strip().splitlines()[-1])
            result, decided_by = summary["result"], summary["decided_by"]
            peak = float(summary.get("peak_memory_mb", 0.0))
            seconds = float(summary["seconds"])
        except (IndexError, ValueError, KeyError):
            result = "error"
            decided_by = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1][:200]
    except subprocess.TimeoutExpired:
        result, seconds, decided_by = "timeout", time.monotonic() - started, "killed at the hard limit"
    witness_ok = None
    if result == "sat":
        try:
            witness_ok, reason = check_witness(instance.onnx, instance.vnnlib, results_file.read_text())
        except (OSError, ValueError, KeyError) as error:
            witness_ok, reason = False, str(error)
        if not witness_ok:
            decided_by += f"; witness check failed: {reason}"
    record = InstanceRecord(instance.index, instance.onnx_text, instance.vnnlib_text, result,
                            round(seconds, 3), decided_by, peak, witness_ok)
    atomic_write_text(out / f"{stem}.json", json.dumps(asdict(record)))
    return record


def run_instances(instances: list[Instance], out: Path, timeout_scale: float = 1.0,
                  workers: int = 1, threads: int | None = None, device: str = "cpu") -> list[InstanceRecord]:
    """Run (or resume) every instance; returns the records in instance order. Each instance
    gets ``threads`` math threads (default: the cores shared out among the workers) and runs
    its bound computations on ``device`` (as `verirepair verify --device`)."""
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
    with tqdm(total=len(instances), initial=len(records), desc="instances", unit="inst") as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_instance, i, out, timeout_scale, threads, device) for i in pending]
        for future in as_completed(futures):
            record = future.result()
            records[record.index] = record
            progress.set_postfix_str(f"{record.result} {Path(record.onnx).stem[:24]}/{Path(record.vnnlib).stem}")
            progress.update()
    return [records[i.index] for i in instances]
