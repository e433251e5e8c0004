"""Run a VNN-COMP instance list on a Ray cluster: each instance is one Ray task.

A task runs its instance exactly as the local runner does (`runner.outcome_of`: a forked process
under the same hard limit, the same witness check and timeout rule) in a scratch folder of the
node it lands on, and returns the record and the results file's text. The driver writes them
into the output folder, so records, resume and scoring are those of a local run: a run started
locally can be finished on a cluster and the other way round. Networks and specifications are
read by path on the nodes, so every node needs them at the same absolute path (a shared file
system); docs/cluster.md says how to set a cluster up.

SIGINT and SIGTERM cancel the outstanding tasks (a running task's worker is killed, and with it,
through its lifeline, the instance's process) and raise `BenchInterrupted`, keeping the records
of the finished instances.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from ..extras import require
from .instances import Instance
from .progress import Progress
from .records import InstanceOutcome, InstanceRecord, finished_records, save_outcome
from .runner import (
    KILL_GRACE,
    STOP_POLL_SECONDS,
    BenchInterrupted,
    VerifyOptions,
    outcome_of,
    stopping_on_signals,
)

# How long the driver waits for the cluster's address to answer before giving up.
CONNECT_SECONDS = 5.0


def import_ray() -> ModuleType:
    return require("ray", "ray", "needed for bench --ray")


def connect(ray: ModuleType, address: str) -> None:
    """Join the running cluster at ``address`` (``auto``: the one started on this machine with
    ``ray start``); never starts a cluster of its own. An address where nothing listens is
    refused at once: Ray itself would retry it for minutes."""
    named = repr(address)
    if address == "auto" and _auto_address() is not None:
        address = _auto_address()
        named = f"{address!r} (where auto leads: RAY_ADDRESS, else the last 'ray start' on this machine)"
    if address != "auto":
        _check_listening(address, named)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(None, "--ray", f"no Ray cluster reachable at {address!r}: {first_line}") from None


def _auto_address() -> str | None:
    """The cluster ``auto`` means, as Ray looks it up: ``RAY_ADDRESS``, else the address the last
    ``ray start`` on this machine recorded (None: neither, and Ray's own search has the last word)."""
    from_environment = os.environ.get("RAY_ADDRESS", "")
    if from_environment not in ("", "auto"):
        return from_environment
    recorded = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    return (recorded.read_text().strip() or None) if recorded.is_file() else None


def _check_listening(address: str, named: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(None, "--ray", f"expected auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise InputError(None, "--ray", f"no Ray cluster reachable at {named}: {reason}") from None


def outcome_on_node(instance: Instance, timeout_scale: float, threads: int, options: VerifyOptions,
                    kill_grace: float = KILL_GRACE) -> InstanceOutcome:
    """The Ray task: `outcome_of` in a scratch folder of the node that runs it. Never None: no
    stop event reaches a task; cancelling one kills its worker instead."""
    with tempfile.TemporaryDirectory(prefix="verirepair-bench-") as scratch:
        outcome = outcome_of(instance, Path(scratch), timeout_scale, threads, options, kill_grace)
    assert outcome is not None
    return outcome


def run_instances_on_ray(instances: list[Instance], out: Path, address: str, timeout_scale: float = 1.0,
                         threads: int = 1, options: VerifyOptions | None = None) -> list[InstanceRecord]:
    """Run (or resume) every instance as a Ray task of ``threads`` CPUs (and one GPU when
    ``options`` name a CUDA device) on the cluster at ``address``; returns the records in
    instance order, as `runner.run_instances` does."""
    options = options or VerifyOptions()
    ray = import_ray()
    connect(ray, address)
    out.mkdir(parents=True, exist_ok=True)
    records, pending = finished_records(instances, out)
    try:
        task = ray.remote(num_cpus=threads, num_gpus=1 if options.device.startswith("cuda") else 0)(outcome_on_node)
        stop, signals = threading.Event(), []
        with stopping_on_signals(stop, signals), Progress(len(instances), len(records)) as progress:
            # absolute paths: a node's worker does not run in the driver's working folder
            running = {task.remote(dataclasses.replace(i, base=i.base.resolve()), timeout_scale, threads, options): i
                       for i in pending}
            while running and not stop.is_set():
                ready, _ = ray.wait(list(running), num_returns=1, timeout=STOP_POLL_SECONDS)
                for ref in ready:
                    instance = running.pop(ref)
                    outcome = _outcome_or_error(ray, ref, instance)
                    save_outcome(out, instance, outcome)
                    records[instance.index] = outcome.record
                    progress.finished(outcome.record)
            for ref in running:
                ray.cancel(ref, force=True)
    finally:
        ray.shutdown()
    if signals:
        raise BenchInterrupted(signals[0], len(records), len(instances))
    return [records[i.index] for i in instances]


def _outcome_or_error(ray: ModuleType, ref: object, instance: Instance) -> InstanceOutcome:
    """The task's outcome; a task that Ray could not complete (its worker or node lost after
    Ray's retries) is recorded as an error of its instance, as a crash is in a local run."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        reason = " ".join(str(error).split())[:200]
        record = InstanceRecord(instance.index, instance.onnx_text, instance.vnnlib_text, "error", 0.0,
                                f"ray: {type(error).__name__}: {reason}", 0.0, None)
        return InstanceOutcome(record, None)
