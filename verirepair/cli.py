"""Command line: argument parsing and printing only; the work happens in the stage packages.

Exit codes (documented in README.md):
  0  unsat — the property holds        10 sat — violated, counterexample confirmed
  20 unknown                           21 timeout
  2  bad input or usage (one line on stderr)
  3  internal error                    4  capability not available yet
check-and-fix / repair: 0 proven (held already, or repaired and proven on the written file),
  20 not proven within the budget (nothing written as -o).
check-certificate: 0 the certificate checks, 30 it does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

from .errors import InputError, SettingsError

EXIT_CODES = {"unsat": 0, "sat": 10, "unknown": 20, "timeout": 21, "error": 3}
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOT_YET, EXIT_INVALID_CERTIFICATE = 2, 3, 4, 30
EXIT_NOT_PROVEN = 20


# Strategies that only repair a whole property's boxes.
AREA_ONLY = ("auto", "reassure-boxes")


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
    from .files import atomic_write_text, check_writable
    from .verify import VerifySettings, format_witness, verify_files

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    for output in (args.results_file, args.certificate):
        if output:
            check_writable(output)
    settings = VerifySettings(timeout=args.timeout, device=_device(args.device), milp_solver=args.milp_solver)
    proofs: list | None = [] if args.certificate else None
    verdict = verify_files(onnx_path, vnnlib_path, settings, proofs)
    notes = list(verdict.notes)
    if args.certificate:
        notes.append(_write_certificate(args.certificate, onnx_path, vnnlib_path, verdict.status, proofs or []))
    found = verdict.counterexample
    if found is not None and found.moved_by_cast:
        notes.append(f"{found.moved_by_cast} witness inputs hold no number of the model's input type in their "
                     "interval: the witness writes the box value, onnxruntime ran its cast")
    if args.results_file:
        body = verdict.status + "\n"
        if verdict.counterexample is not None:
            body += format_witness(verdict.counterexample) + "\n"
        atomic_write_text(args.results_file, body)
    summary = {
        "result": verdict.status, "seconds": round(verdict.seconds, 3), "decided_by": verdict.decided_by,
        "onnx": onnx_path, "vnnlib": vnnlib_path, "notes": notes,
    }
    if verdict.status == "unsat":  # what the proof rests on (docs/soundness.md)
        summary["trust"] = "solver" if verdict.rests_on_solver else "bounds"
    summary["peak_memory_mb"] = _peak_memory_mb()
    if found is not None:
        summary["counterexample"] = {"x": found.x.tolist(), "y": found.y.tolist(),
                                     "inputs_moved_by_cast": found.moved_by_cast}
    if args.json:
        print(json.dumps(summary))
    else:
        remarks = f" ({'; '.join(notes)})" if notes else ""
        print(f"{verdict.status} in {verdict.seconds:.2f}s, decided by {verdict.decided_by}{remarks}")
    return EXIT_CODES[verdict.status]


def _write_certificate(path: str, onnx_path: str, vnnlib_path: str, status: str, proofs: list) -> str:
    """Write the certificate when every region has one; the returned note says what happened."""
    from .verify import Certificate, file_sha256

    if status != "unsat":
        return f"no certificate written: the answer is {status}"
    if len(proofs) == 0 or any(p is None for p in proofs):
        return "no certificate written: some region was not decided by a certifiable proof"
    Certificate(file_sha256(onnx_path), file_sha256(vnnlib_path), proofs).write(path)
    return f"certificate written to {path}"


def _check_certificate(args: argparse.Namespace) -> int:
    from .verify import check_certificate

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    result = check_certificate(args.certificate, vnnlib_path, onnx_path)
    print(f"{'valid' if result.ok else 'INVALID'}: {result.message}")
    return 0 if result.ok else EXIT_INVALID_CERTIFICATE


def _peak_memory_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _bench(args: argparse.Namespace) -> int:
    from .bench import (
        TABLE_HEADER,
        BenchInterrupted,
        VerifyOptions,
        expected_results,
        read_ground_truth,
        read_instances,
        results_csv,
        run_instances,
        summarise,
        table_row,
    )
    from .files import atomic_write_text

    instances = read_instances(args.instances)
    truth = expected_results(instances, read_ground_truth(args.ground_truth)) if args.ground_truth else {}
    if args.ground_truth and not truth:
        raise InputError(args.ground_truth, None, f"matches none of the {len(instances)} instances of "
                         f"{args.instances} (paths are resolved relative to each CSV's folder)")
    out = Path(args.out)
    if args.timeout is not None:
        instances = [dataclasses.replace(i, timeout=args.timeout) for i in instances]
    options = VerifyOptions(_device(args.device), args.milp_solver)
    try:
        records = run_instances(instances, out, args.timeout_scale, args.workers, args.threads, options)
    except BenchInterrupted as stopped:
        print(f"verirepair: bench {stopped}; their records are in {out}, rerun the same command to resume",
              file=sys.stderr)
        return 128 + stopped.signum
    atomic_write_text(out / "results.csv", results_csv(records, truth))
    summary = summarise(records, truth)
    print(TABLE_HEADER)
    print(table_row(Path(args.instances).parent.name or "instances", summary))
    if args.ground_truth:
        print(f"ground truth for {len(truth)} of {len(instances)} instances ({args.ground_truth})")
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


def _strategy(name: str):
    from .repair import available, strategy_named

    if name not in available():
        raise InputError(None, "--strategy", f"unknown strategy {name!r} (available: {', '.join(available()) or 'none'})")
    return strategy_named(name)


def _repair_settings(args: argparse.Namespace, n_inputs: int | None = None):
    from .repair import RepairSettings
    from .repair.data import load_data
    from .repair.input_domain import parse_domain

    data = load_data(args.data, n_inputs) if args.data else None
    domain = parse_domain(args.domain) if getattr(args, "domain", None) else None
    return RepairSettings(
        budget=args.budget, verify_timeout=getattr(args, "verify_timeout", None) or args.budget,
        max_iterations=getattr(args, "max_iterations", 50), seed=args.seed, device=_device(args.device),
        output=Path(args.output) if args.output else None,
        keep_unproven=Path(args.keep_unproven) if args.keep_unproven else None,
        side_effect_samples=args.samples, data=data, decision=args.decision, domain=domain,
        polish_attempts=0 if getattr(args, "no_polish", False) else RepairSettings.polish_attempts,
    )


def _print_report(report, args: argparse.Namespace) -> None:
    if args.report:
        report.write_json(args.report)
    print(report.to_json() if args.json else report.summary())


def _check_and_fix(args: argparse.Namespace) -> int:
    from .repair import check_and_fix

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    strategy = _strategy(args.strategy)
    settings = _repair_settings(args)
    report = check_and_fix(onnx_path, vnnlib_path, strategy, settings)
    _print_report(report, args)
    return 0 if report.proven else EXIT_NOT_PROVEN


def _repair(args: argparse.Namespace) -> int:
    from .network import load_network
    from .repair import repair_points
    from .repair.data import load_points

    if args.points is None or (args.label is None and args.labels is None):
        raise NotYet("'verirepair repair' supports point-wise repair only (--points with --label or --labels); "
                     "for a VNN-LIB property use 'verirepair check-and-fix'")
    if args.label is not None and args.labels is not None:
        raise InputError(None, "--labels", "give either --label (one for all points) or --labels (one per point)")
    if not Path(args.network).exists():
        raise InputError(args.network, None, "no such file")
    if args.strategy in AREA_ONLY:
        raise InputError(None, "--strategy", f"{args.strategy} repairs whole properties (check-and-fix), not points")
    strategy = _strategy(args.strategy)
    points = load_points(args.points)
    label = args.label if args.labels is None else _point_labels(args.labels)
    settings = _repair_settings(args, load_network(args.network).n_inputs)
    lower = _numbers(args.lower, "--lower") if args.lower else None
    upper = _numbers(args.upper, "--upper") if args.upper else None
    report = repair_points(args.network, points, label, strategy, settings, lower, upper)
    _print_report(report, args)
    return 0 if report.proven else EXIT_NOT_PROVEN


def _point_labels(path: str) -> np.ndarray:
    """``--labels``: a .npy vector of integer output indices, one per point."""
    import numpy as np

    from .repair.data import load_points

    values = load_points(path).reshape(-1)
    if not np.all(values == np.round(values)):
        raise InputError(path, None, "labels must be whole numbers (output indices)")
    return values.astype(np.int64)


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(None, option, f"expected comma-separated numbers, got {text!r}") from None


def _convert(args: argparse.Namespace) -> int:
    import onnx

    from .files import atomic_write_bytes
    from .network.nnet import nnet_to_onnx, read_nnet

    nnet = read_nnet(args.source)
    model = nnet_to_onnx(nnet, args.normalize)
    atomic_write_bytes(args.target, model.SerializeToString())
    print(f"{args.target}: {nnet.n_inputs} inputs ({args.normalize}), {nnet.n_outputs} outputs, "
          f"{len(nnet.weights) - 1} hidden layers; onnx {onnx.__version__}")
    return 0


# `verirepair.milp.solvers.PREFERENCES`, spelled out here: importing it would import torch just to
# build the parser (a test keeps the two equal).
MILP_SOLVERS = ("auto", "highs", "gurobi")


def _add_milp_solver_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--milp-solver", choices=MILP_SOLVERS, default="auto",
                     help="MILP/LP back end: auto (Gurobi when installed and its licence takes the model, "
                          "else HiGHS), highs or gurobi (default auto)")


def _add_repair_options(sub: argparse.ArgumentParser, strategy: str) -> None:
    """The options check-and-fix and repair share; ``strategy``: the default of --strategy."""
    sub.add_argument("-o", "--output", help="write the repaired ONNX network here (only when proven)")
    # Listed here, not read from the registry: importing it would load torch for every command.
    names = ("auto", "reassure", "reassure-boxes", "birdnn", "birdnn-retrain", "birdnn-finetune")
    sub.add_argument("--strategy", default=strategy,
                     help="repair strategy: " + ", ".join(f"{n} (default)" if n == strategy else n for n in names)
                          + ("; auto picks a portfolio from the network and the property (README)" if strategy == "auto" else ""))
    sub.add_argument("--budget", type=_positive_float, default=600.0, help="seconds for the whole run (default 600)")
    sub.add_argument("--report", help="write the JSON report here")
    sub.add_argument("--keep-unproven", help="when not proven, write the last attempt here (never as -o)")
    sub.add_argument("--samples", type=int, default=10_000, help="samples for the side-effect figures (default 10000)")
    sub.add_argument("--decision", choices=("argmax", "argmin", "ranking"),
                     help="the decision strategies keep and side effects judge: argmax (classifiers), argmin "
                          "(ACAS Xu/HCAS scores) or ranking (the whole order of the outputs; the default)")
    sub.add_argument("--data", help=".npz/.h5 with X (inputs) and optional y, for accuracy and ND figures")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verirepair", description="Verify and repair neural networks (ONNX + VNN-LIB).")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="prove a VNN-LIB property or find a counterexample")
    verify.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    verify.add_argument("second", help="net.onnx or spec.vnnlib")
    verify.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds (default 60)")
    verify.add_argument("--results-file", help="write the VNN-COMP results file here")
    verify.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    verify.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_milp_solver_option(verify)
    verify.add_argument("--certificate", help="for unsat, write a proof certificate here (input-split proofs)")
    verify.set_defaults(run=_verify)

    check = commands.add_parser("check-certificate", help="re-check a proof certificate independently")
    check.add_argument("certificate")
    check.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    check.add_argument("second", help="net.onnx or spec.vnnlib")
    check.set_defaults(run=_check_certificate)

    info = commands.add_parser("info", help="describe ONNX networks and VNN-LIB files")
    info.add_argument("files", nargs="+")
    info.set_defaults(run=_info)

    bench = commands.add_parser("bench", help="run a VNN-COMP instances.csv and score it")
    bench.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout; paths relative to it)")
    bench.add_argument("--ground-truth", help="CSV with onnx,vnnlib,result columns to judge answers")
    bench.add_argument("--timeout-scale", type=_positive_float, default=1.0, help="multiply every timeout")
    bench.add_argument("--timeout", type=_positive_float, help="use this timeout (s) for every instance instead")
    bench.add_argument("--workers", type=_positive_int, default=1, help="instances run at once")
    bench.add_argument("--threads", type=_positive_int, help="math threads per instance (default: cores / workers)")
    bench.add_argument("--out", default="bench-out", help="folder for per-instance results and results.csv")
    bench.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu), for every instance")
    _add_milp_solver_option(bench)
    bench.set_defaults(run=_bench)

    fix = commands.add_parser("check-and-fix", help="verify; if violated, repair until proven on the exported ONNX")
    fix.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    fix.add_argument("second", help="net.onnx or spec.vnnlib")
    fix.add_argument("--verify-timeout", type=_positive_float, help="seconds per verification (default: the budget)")
    fix.add_argument("--max-iterations", type=_positive_int, default=50)
    fix.add_argument("--no-polish", action="store_true",
                     help="keep the first proven candidate (no polishing step after the proof)")
    fix.add_argument("--domain", help="where the network is used, holding the property's boxes: l1,...,ln:u1,...,un "
                                      "or a VNN-LIB file (the hull of its boxes; write --domain=-1,... when it starts "
                                      "with a minus); behaviour there outside the boxes is kept and measured (without "
                                      "it: not constrained)")
    _add_repair_options(fix, "auto")
    fix.set_defaults(run=_check_and_fix)

    repair = commands.add_parser("repair", help="run one repair strategy (point-wise: --points, --label)")
    repair.add_argument("network", help="net.onnx")
    repair.add_argument("--points", help=".npy array of buggy inputs (one row each)")
    repair.add_argument("--label", type=int, help="the output index every point must get")
    repair.add_argument("--labels", help=".npy vector: the output index each point must get (instead of --label)")
    repair.add_argument("--lower", help="repair domain lower corner, comma-separated (default: the points' minimum)")
    repair.add_argument("--upper", help="repair domain upper corner, comma-separated (default: the points' maximum)")
    _add_repair_options(repair, "reassure")
    repair.set_defaults(run=_repair)

    convert = commands.add_parser("convert", help="convert a .nnet network to ONNX")
    convert.add_argument("source", help="net.nnet")
    convert.add_argument("target", help="net.onnx")
    convert.add_argument("--normalize", choices=("raw", "normalized"), default="raw",
                         help="raw: the ONNX takes raw inputs and includes the .nnet normalisation (default); "
                              "normalized: weights only, inputs already normalised (REASSURE's loader)")
    convert.set_defaults(run=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's mistake is one line and exit 2; anything else (a bug, an overflow,
    a NaN bound) is one line and exit 3, never a verdict, with the traceback under ``--debug``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except InputError as error:
        print(f"verirepair: error: {error.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotYet as error:
        print(f"verirepair: not yet: {error}", file=sys.stderr)
        return EXIT_NOT_YET
    except SettingsError as error:
        print(f"verirepair: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - the contract: one line, exit 3
        if args.debug:
            raise
        reason = " ".join(str(error).split()) or "no message"
        print(f"verirepair: internal error: {type(error).__name__}: {reason} (--debug shows the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
