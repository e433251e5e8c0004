"""Verify the same instances under several `VerifySettings` variants, to measure what one setting
buys (an ablation). Each instance runs in its own process, one variant after the other, so the
variants see the same machine.

    python tools/ablate_verify.py ../shared/benchmarks/mnist_fc/instances.csv --match 256x4 --match 0.05 \
        --variant base --variant no-early-stop:milp_refine_early_stop=false --timeout 300 --json out.jsonl

A variant is ``NAME`` or ``NAME:setting=value,setting=value`` (values read as Python literals, or
true/false). One more setting exists only here: ``rounding_budget=false`` sets γ_n of
`verirepair.bounds.rounding` to 0 in that variant's processes, so every bound skips the float64
rounding-error budget; it measures what the budget costs, and its answers are not proofs. Prints one row per instance and variant (verdict, decided by, seconds, the notes about
refined bounds, and per ReLU-split search left open its domains bounded, open domains and weakest
bound) and the decided count per variant; ``--json`` also writes the rows, one per line.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import logging
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verirepair.files import atomic_write_text
from verirepair.verify import VerifySettings, verify_files


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    name, _, assignments = text.partition(":")
    fields = {f.name for f in dataclasses.fields(VerifySettings)} | {"rounding_budget"}
    changes: dict[str, object] = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        if key not in fields:
            raise SystemExit(f"variant {name}: no setting {key!r}")
        lowered = value.strip().lower()
        changes[key] = {"true": True, "false": False}.get(lowered, None)
        if changes[key] is None:
            changes[key] = ast.literal_eval(value)
    return name, changes


class _Collected(logging.Handler):
    """The ReLU split's reports of searches it left open (domains bounded, open, weakest bound)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _drop_rounding_budget() -> None:
    """γ_n = 0 wherever the verifier imported it: every error term of `bounds.rounding` becomes 0."""
    from verirepair.bounds import rounding

    exact_gamma = rounding.gamma
    for name, module in list(sys.modules.items()):
        if name.startswith("verirepair.") and getattr(module, "gamma", None) is exact_gamma:
            module.gamma = lambda n: 0.0  # type: ignore[attr-defined]


def run_one(onnx_path: str, vnnlib_path: str, changes: dict[str, object], timeout: float, queue: multiprocessing.Queue) -> None:
    import torch

    torch.set_num_threads(1)
    changes = dict(changes)
    if not changes.pop("rounding_budget", True):
        _drop_rounding_budget()
    collected = _Collected()
    split_logger = logging.getLogger("verirepair.verify.relu_split")
    split_logger.setLevel(logging.INFO)
    split_logger.addHandler(collected)
    settings = dataclasses.replace(VerifySettings(timeout=timeout), **changes)
    started = time.perf_counter()
    verdict = verify_files(onnx_path, vnnlib_path, settings)
    queue.put({"status": verdict.status, "decided_by": verdict.decided_by,
               "seconds": round(time.perf_counter() - started, 2),
               "notes": [note for note in verdict.notes if "refined" in note or "bound" in note][:3],
               "relu_split_open": collected.messages})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instances", help="VNN-COMP instances.csv")
    parser.add_argument("--match", action="append", default=[], help="keep rows containing this text (all must match)")
    parser.add_argument("--variant", action="append", required=True, help="NAME or NAME:setting=value,...")
    parser.add_argument("--timeout", type=float, help="seconds per instance (default: the csv's)")
    parser.add_argument("--json", help="write the rows here, one JSON object per line")
    args = parser.parse_args(argv)
    variants = [parse_variant(text) for text in args.variant]
    base = Path(args.instances).resolve().parent
    with open(args.instances, newline="") as stream:
        rows = [row for row in csv.reader(stream) if row and all(m in ",".join(row) for m in args.match)]
    results = []
    context = multiprocessing.get_context("spawn")
    for onnx_name, vnnlib_name, csv_timeout in rows:
        for name, changes in variants:
            queue = context.Queue()
            timeout = args.timeout or float(csv_timeout)
            process = context.Process(target=run_one, args=(str(base / onnx_name), str(base / vnnlib_name), changes, timeout, queue))
            process.start()
            process.join(timeout + 60)
            if process.is_alive():
                process.kill()
            outcome = queue.get() if not queue.empty() else {"status": "error", "decided_by": "no result", "seconds": None,
                                                             "notes": [], "relu_split_open": []}
            row = {"instance": f"{onnx_name} {vnnlib_name}", "variant": name, **outcome}
            results.append(row)
            print(f"{row['instance']:55s} {name:16s} {row['status']:8s} {row['decided_by']:14s} {row['seconds']} "
                  f"{' | '.join(row['notes'] + row['relu_split_open'])}", flush=True)
    print()
    for name, _ in variants:
        mine = [r for r in results if r["variant"] == name]
        decided = sum(r["status"] in ("sat", "unsat") for r in mine)
        print(f"{name}: {decided}/{len(mine)} decided")
    if args.json:
        atomic_write_text(args.json, "".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
