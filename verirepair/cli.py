"""Command line: argument parsing and printing only; the work happens in the stage packages.

Exit codes (documented in README.md):
  0  unsat — the property holds        10 sat — violated, counterexample confirmed
  20 unknown                           21 timeout
  2  bad input or usage (one line on stderr)
  3  internal error                    4  capability not available yet
check-and-fix / repair: 0 proven (held already, or repaired and proven on the written file; for a
  suite: every property), 20 not proven within the budget (nothing written as -o).
check-certificate: 0 the certificate checks, 30 it does not, 31 it checks but parts of it rest on a
  MILP solver's word (listed; 0 with --allow-trusted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

from . import progress
from .errors import InputError, NotYet, SettingsError

EXIT_CODES = {"unsat": 0, "sat": 10, "unknown": 20, "timeout": 21, "error": 3}
EXIT_TRUSTED_CERTIFICATE = 31
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOT_YET, EXIT_INVALID_CERTIFICATE = 2, 3, 4, 30
EXIT_NOT_PROVEN = 20


# Strategies that only repair a whole property's boxes.
AREA_ONLY = ("auto", "reassure-boxes", "archrepair")


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
    from .api import verify
    from .files import atomic_write_text, check_writable
    from .verify import format_witness

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    for output in (args.results_file, args.certificate):
        if output:
            check_writable(output)
    _check_report_option(args.report)
    verdict = verify(onnx_path, vnnlib_path, timeout=args.timeout, device=_device(args.device),
                     milp_solver=args.milp_solver, certificate=args.certificate)
    notes = list(verdict.notes)
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
    if args.report:
        _write_report(args.report, json.dumps(summary, indent=2), lambda: _html().verify_page(summary))
    if args.json:
        print(json.dumps(summary))
    else:
        remarks = f" ({'; '.join(notes)})" if notes else ""
        print(f"{verdict.status} in {verdict.seconds:.2f}s, decided by {verdict.decided_by}{remarks}")
    return EXIT_CODES[verdict.status]


def _html():  # type: ignore[no-untyped-def]
    """The HTML report package, imported only when an HTML report is asked for."""
    from . import htmlreport

    return htmlreport


def _check_report_option(path: str | None) -> None:
    """Before any work: the report can be written and, for HTML, matplotlib is there."""
    from .files import check_writable

    if path:
        check_writable(path)
        if _html().is_html(path):
            _html().require_matplotlib()


def _write_report(path: str, json_text: str, html_page) -> None:  # type: ignore[no-untyped-def]
    """``--report``: the page ``html_page()`` builds for a .html file, else the JSON."""
    from .files import atomic_write_text

    atomic_write_text(path, html_page() if _html().is_html(path) else json_text + "\n")


def _check_certificate(args: argparse.Namespace) -> int:
    from .api import check_certificate

    onnx_path, vnnlib_path = _order_files(args.first, args.second)
    result = check_certificate(onnx_path, vnnlib_path, args.certificate)
    if result.ok and result.trusted:
        print(f"valid, {len(result.trusted)} solver-trusted: {result.message}")
        for what in result.trusted:
            print(f"  not re-checked (solver-trusted): {what}")
        return 0 if args.allow_trusted else EXIT_TRUSTED_CERTIFICATE
    print(f"{'valid' if result.ok else 'INVALID'}: {result.message}")
    return 0 if result.ok else EXIT_INVALID_CERTIFICATE


def _peak_memory_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _bench(args: argparse.Namespace) -> int:
    from .api import bench
    from .bench import TABLE_HEADER, BenchInterrupted, table_row

    _check_report_option(args.report)
    try:
        result = bench(args.instances, out=args.out, timeout=args.timeout, timeout_scale=args.timeout_scale,
                       workers=args.workers, threads=args.threads, ground_truth=args.ground_truth,
                       device=_device(args.device), milp_solver=args.milp_solver, ray=args.ray)
    except BenchInterrupted as stopped:
        print(f"verirepair: bench {stopped}; their records are in {args.out}, rerun the same command to resume",
              file=sys.stderr)
        return 128 + stopped.signum
    family = Path(args.instances).parent.name or "instances"
    if args.report:
        summary = result.summary
        _write_report(args.report, json.dumps({"benchmark": family, **dataclasses.asdict(summary)}, indent=2),
                      lambda: _html().bench_page(family, summary, result.records, result.truth,
                                                 _html().peers_beside(args.instances)))
    print(TABLE_HEADER)
    print(table_row(family, result.summary))
    if args.ground_truth:
        print(f"ground truth for {result.judged} of {len(result.records)} instances ({args.ground_truth})")
    print(f"results: {result.results_csv}")
    return 0


def _positive_int(text: str) -> int:
    value = int(_positive_float(text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _device(name: str) -> str:
    from .devices import resolve_device

    return resolve_device(name, "--device")


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


def _strategy(name: str, suite: bool = False):
    from .repair import available, strategy_named

    if name not in available():
        raise InputError(None, "--strategy", f"unknown strategy {name!r} (available: {', '.join(available()) or 'none'})")
    return strategy_named(name, suite)


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
        certificate=Path(args.certificate) if getattr(args, "certificate", None) else None,
    )


def _print_report(report, args: argparse.Namespace, settings, domain=None) -> None:  # type: ignore[no-untyped-def]
    """Print the repair report; ``--report`` writes it as JSON or, for a .html file, as a page whose
    figures follow the run's settings (``domain``: the box of a point-wise repair)."""
    if args.report:
        def page() -> str:
            figures = _html().FigureSettings(settings.side_effect_samples, settings.seed, settings.decision_rule,
                                             settings.data, domain)
            return _html().repair_page(report, figures)

        _write_report(args.report, report.to_json(), page)
    print(report.to_json() if args.json else report.summary())


def _check_and_fix(args: argparse.Namespace) -> int:
    from .bench.suites import suite_files
    from .files import check_writable
    from .repair import check_and_fix, check_and_fix_suite

    named = suite_files(args.files)
    if named.network is None:
        raise InputError(", ".join(args.files), None, "expected one .onnx network among the arguments "
                                                      "(or an instances.csv naming it)")
    suite = len(named.properties) > 1
    if suite and args.certificate:
        raise NotYet("a proof certificate of a property suite: give one property with --certificate")
    _check_report_option(args.report)
    if args.certificate:
        check_writable(args.certificate)
    settings = _repair_settings(args)
    if suite:
        report = check_and_fix_suite(named.network, named.properties, _strategy(args.strategy, suite=True), settings)
    else:
        report = check_and_fix(named.network, named.properties[0], _strategy(args.strategy), settings)
    _print_report(report, args, settings)
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
    _check_report_option(args.report)
    strategy = _strategy(args.strategy)
    points = load_points(args.points)
    label = args.label if args.labels is None else _point_labels(args.labels)
    settings = _repair_settings(args, load_network(args.network).n_inputs)
    lower = _numbers(args.lower, "--lower") if args.lower else None
    upper = _numbers(args.upper, "--upper") if args.upper else None
    report = repair_points(args.network, points, label, strategy, settings, lower, upper)
    domain = _html().points_domain(points, lower, upper) if args.report and _html().is_html(args.report) else None
    _print_report(report, args, settings, domain)
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
    names = ("auto", "reassure", "reassure-boxes", "birdnn", "birdnn-retrain", "birdnn-finetune", "inner", "archrepair")
    sub.add_argument("--strategy", default=strategy,
                     help="repair strategy: " + ", ".join(f"{n} (default)" if n == strategy else n for n in names)
                          + ("; auto picks a portfolio from the network and the property (README)" if strategy == "auto" else ""))
    sub.add_argument("--budget", type=_positive_float, default=600.0, help="seconds for the whole run (default 600)")
    sub.add_argument("--report", help="write the report here: a self-contained HTML page with figures when "
                                      "the name ends in .html (needs the 'report' extra), else JSON")
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
    parser.add_argument("--version", action="version", version=f"verirepair {_version()}")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-v", "--verbose", action="count", default=0,
                         help="log what the stages do on stderr (-v: INFO, -vv: DEBUG)")
    chatter.add_argument("-q", "--quiet", action="store_true",
                         help="errors only on stderr: no warnings, no progress line")
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="prove a VNN-LIB property or find a counterexample")
    verify.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    verify.add_argument("second", help="net.onnx or spec.vnnlib")
    verify.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds (default 60)")
    verify.add_argument("--results-file", help="write the VNN-COMP results file here")
    verify.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    verify.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_milp_solver_option(verify)
    verify.add_argument("--certificate", help="for unsat, write a proof certificate here (proofs on chains of "
                                              "dense layers with ReLU, sigmoid or tanh activations)")
    verify.add_argument("--report", help="write the result here: an HTML page when the name ends in .html "
                                         "(needs the 'report' extra), else the JSON that --json prints")
    verify.set_defaults(run=_verify)

    check = commands.add_parser("check-certificate", help="re-check a proof certificate independently")
    check.add_argument("certificate")
    check.add_argument("first", help="spec.vnnlib or net.onnx (either order)")
    check.add_argument("second", help="net.onnx or spec.vnnlib")
    check.add_argument("--allow-trusted", action="store_true",
                       help="exit 0 also when parts of the proof rest on a MILP solver (listed either way; else exit 31)")
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
    bench.add_argument("--threads", type=_positive_int, help="math threads per instance (default: cores / workers; with --ray: 1, the CPUs each task takes)")
    bench.add_argument("--out", default="bench-out", help="folder for per-instance results and results.csv")
    bench.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu), for every instance")
    bench.add_argument("--report", help="write the summary here: an HTML page with a cactus plot (and peers' "
                                        "results from peers_results.csv beside instances.csv) when the name ends "
                                        "in .html (needs the 'report' extra), else JSON")
    _add_milp_solver_option(bench)
    bench.add_argument("--ray", metavar="auto|ADDRESS",
                       help="run each instance as a task on a running Ray cluster: auto (the one 'ray start' "
                            "began on this machine), host:6379 or ray://host:10001 (docs/cluster.md)")
    bench.set_defaults(run=_bench)

    fix = commands.add_parser("check-and-fix", help="verify; if violated, repair until proven on the exported ONNX")
    fix.add_argument("files", nargs="+", metavar="FILE",
                     help="net.onnx and one or more properties, in any order: spec.vnnlib files, folders of them, "
                          "or a VNN-COMP instances.csv (which may name the network instead)")
    fix.add_argument("--verify-timeout", type=_positive_float, help="seconds per verification (default: the budget)")
    fix.add_argument("--max-iterations", type=_positive_int, default=50)
    fix.add_argument("--no-polish", action="store_true",
                     help="keep the first proven candidate (no polishing step after the proof)")
    fix.add_argument("--domain", help="where the network is used, holding the property's boxes: l1,...,ln:u1,...,un "
                                      "or a VNN-LIB file (the hull of its boxes; write --domain=-1,... when it starts "
                                      "with a minus); behaviour there outside the boxes is kept and measured (without "
                                      "it: not constrained)")
    fix.add_argument("--certificate", help="when proven, write a proof certificate of the property for the "
                                           "proven file (-o, or the network when it held already)")
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


# Commands long enough for a live progress line on a terminal, with the option that holds their budget.
PROGRESS_BUDGETS = {"verify": "timeout", "check-and-fix": "budget", "repair": "budget"}


def _version() -> str:
    try:
        return version("verirepair")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return __version__


def _configure_logging(verbose: int, quiet: bool) -> None:
    """The ``verirepair`` logger: WARNING by default, INFO with -v, DEBUG with -vv, ERROR with -q."""
    logger = logging.getLogger("verirepair")
    logger.setLevel(logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)])
    for handler in [h for h in logger.handlers if isinstance(h, progress.LogHandler)]:
        logger.removeHandler(handler)  # an earlier main() in this process
    handler = progress.LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("verirepair: %(levelname)s: %(message)s"))
    logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A user's mistake is one line and exit 2; anything else (a bug, an overflow,
    a NaN bound) is one line and exit 3, never a verdict, with the traceback under ``--debug``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "check-and-fix" and not any(word.startswith("-") for word in extra):
        args.files += extra  # files after options: argparse takes one run of a "+" positional only
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose, args.quiet)
    budget_option = PROGRESS_BUDGETS.get(args.command)
    line = None
    if budget_option is not None and not args.quiet:
        line = progress.terminal_line(sys.stderr, getattr(args, budget_option))
    try:
        with progress.showing(line):
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
