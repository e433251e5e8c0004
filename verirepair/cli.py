"""Command line: argument parsing and printing only; the work happens in the stage packages.

Exit codes (documented in README.md):
  0  unsat — the property holds        10 sat — violated, counterexample confirmed
  20 unknown                           21 timeout
  2  bad input or usage (one line on stderr)
  3  internal error                    4  capability not available yet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import InputError

EXIT_CODES = {"unsat": 0, "sat": 10, "unknown": 20, "timeout": 21, "error": 3}
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOT_YET = 2, 3, 4


class NotYet(Exception):
    """A capability that is planned but not built; reported as such, never faked."""


def _order_files(first: str, second: str) -> tuple[str, str]:
    """(onnx, vnnlib) whichever order they came in (VNN-COMP puts the network first)."""
    from .files import looks_like_vnnlib

    for name in (first, second):
        if not Path(name).exists():
            raise InputError(name, None, "no such file")
    if looks_like_vnnlib(first) and not looks_like_vnnlib(second):
        return second, first
    if looks_like_vnnlib(second) and not looks_like_vnnlib(first):
        return first, second
    raise InputError(f"{first}, {second}", None, "expected one .onnx network and one .vnnlib property")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _verify(args: argparse.Namespace) -> int:
    from .files import atomic_write_text
    from .verify import VerifySettings, format_witness, verify_files

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    settings = VerifySettings(timeout=args.timeout, device=_device(args.device))
    verdict = verify_files(onnx_path, vnnlib_path, settings)
    if args.results_file:
        body = verdict.status + "\n"
        if verdict.counterexample is not None:
            body += format_witness(verdict.counterexample) + "\n"
        atomic_write_text(args.results_file, body)
    summary = {
        "result": verdict.status, "seconds": round(verdict.seconds, 3), "decided_by": verdict.decided_by,
        "onnx": onnx_path, "vnnlib": vnnlib_path, "notes": list(verdict.notes),
    }
    summary["peak_memory_mb"] = _peak_memory_mb()
    if verdict.counterexample is not None:
        summary["counterexample"] = {"x": verdict.counterexample.x.tolist(), "y": verdict.counterexample.y.tolist()}
    if args.json:
        print(json.dumps(summary))
    else:
        notes = f" ({'; '.join(verdict.notes)})" if verdict.notes else ""
        print(f"{verdict.status} in {verdict.seconds:.2f}s, decided by {verdict.decided_by}{notes}")
    return EXIT_CODES[verdict.status]


def _peak_memory_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _bench(args: argparse.Namespace) -> int:
    from .bench import (
        TABLE_HEADER,
        read_ground_truth,
        read_instances,
        results_csv,
        run_instances,
        summarise,
        table_row,
    )
    from .files import atomic_write_text

    instances = read_instances(args.instances)
    truth = read_ground_truth(args.ground_truth) if args.ground_truth else {}
    out = Path(args.out)
    if args.timeout is not None:
        instances = [dataclasses.replace(i, timeout=args.timeout) for i in instances]
    records = run_instances(instances, out, args.timeout_scale, args.workers)
    atomic_write_text(out / "results.csv", results_csv(records, truth))
    summary = summarise(records, truth)
    print(TABLE_HEADER)
    print(table_row(Path(args.instances).parent.name or "instances", summary))
    print(f"results: {out / 'results.csv'}")
    return 0


def _positive_int(text: str) -> int:
    value = int(_positive_float(text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, "--device", f"{name} requested but no CUDA device is available")
    return name


def _info(args: argparse.Namespace) -> int:
    from .files import looks_like_vnnlib

    for name in args.files:
        if looks_like_vnnlib(name):
            from .spec import parse_vnnlib

            spec = parse_vnnlib(name)
            clauses = sum(len(r.clauses) for r in spec.regions)
            print(f"{name}: VNN-LIB, {spec.n_inputs} inputs, {spec.n_outputs} outputs, "
                  f"{len(spec.regions)} input box(es), {clauses} violation clause(s)")
        else:
            from .network import load_network

            network = load_network(name)
            ops = ", ".join(dict.fromkeys(network.op_types))
            print(f"{name}: ONNX, input {network.input_name} {list(network.input_shape)}, "
                  f"output {network.output_name} {list(network.output_shape)}, operators: {ops}")
    return 0


def _not_yet(args: argparse.Namespace) -> int:
    raise NotYet(f"'verirepair {args.command}' is not built yet (see the open issues); nothing was written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verirepair", description="Verify and repair neural networks (ONNX + VNN-LIB).")
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="prove a VNN-LIB property or find a counterexample")
    verify.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    verify.add_argument("second", help="net.onnx or spec.vnnlib")
    verify.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds (default 60)")
    verify.add_argument("--results-file", help="write the VNN-COMP results file here")
    verify.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    verify.add_argument("--json", action="store_true", help="print the result as one JSON object")
    verify.set_defaults(run=_verify)

    info = commands.add_parser("info", help="describe ONNX networks and VNN-LIB files")
    info.add_argument("files", nargs="+")
    info.set_defaults(run=_info)

    bench = commands.add_parser("bench", help="run a VNN-COMP instances.csv and score it")
    bench.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout; paths relative to it)")
    bench.add_argument("--ground-truth", help="CSV with onnx,vnnlib,result columns to judge answers")
    bench.add_argument("--timeout-scale", type=_positive_float, default=1.0, help="multiply every timeout")
    bench.add_argument("--timeout", type=_positive_float, help="use this timeout (s) for every instance instead")
    bench.add_argument("--workers", type=_positive_int, default=1, help="instances run at once")
    bench.add_argument("--out", default="bench-out", help="folder for per-instance results and results.csv")
    bench.set_defaults(run=_bench)

    for name, text in (("check-and-fix", "verify and repair until proven (not yet)"),
                       ("repair", "run one repair strategy (not yet)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(run=_not_yet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except InputError as error:
        print(f"verirepair: error: {error.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotYet as error:
        print(f"verirepair: not yet: {error}", file=sys.stderr)
        return EXIT_NOT_YET
    except ValueError as error:  # settings validation
        print(f"verirepair: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
