"""Repair strategies on the shipped MNIST property suites: one check-and-fix per (suite, strategy).

    OMP_NUM_THREADS=1 .venv/bin/python tools/repair_suites.py SUITE [--strategies inner,birdnn]
        [--budget 600] [--verify-timeout S] [--violated K] [--json out.json] [--keep DIR]
        [--set NAME=VALUE ...]

SUITE is a folder of ``specs/`` (``mnist_mlp_robust``, ``mnist_cnn_robust``, ``mnist_cnn_backdoor``) or
its path. Each strategy runs `verirepair.check_and_fix` on the suite's network and properties
(``instances.csv``; with ``--violated K`` only the first K properties that ``expected.csv`` says are
violated, plus those it says hold), with ``data`` = the MNIST training split (an .npz of ``X``, ``y``),
``decision="argmax"`` and the budget, on one torch thread. Columns: violated before, proven after of
all, lost (held before and violated after), held-out accuracy before → after and the worst class's
held-out accuracy before → after (onnxruntime on the file: the written one when proven, otherwise
the run's last candidate, marked ``*``), the initializer entries that differ from the original's
(and entries of initializers the repair added), the wall time; for the backdoored network also the
attack success rate before → after (`tools/attack_success.py`; accuracy is its clean accuracy).
The JSON also has each run's per-property verdicts, notes, phase seconds and each round's verdicts
and strategy details.
``--set`` changes a number or a name of `ArchRepairSettings` for the ``archrepair`` runs (e.g.
``verifiable_weight=0`` turns the verifiability term off, ``block=conv1.relu`` repairs that block); the run then goes through
`verirepair.repair.check_and_fix_suite_network` with that strategy object, as the API does.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from attack_success import attack_success_rate, predicted_labels
from onnx import numpy_helper

from verirepair import check_and_fix, datasets
from verirepair.errors import InputError
from verirepair.network import load_network
from verirepair.repair import RepairSettings, check_and_fix_suite_network
from verirepair.repair.archrepair import ArchRepair, ArchRepairSettings
from verirepair.repair.report import Iteration, RepairReport
from verirepair.spec import Spec, parse_vnnlib
from verirepair.verify import Deadline, VerifySettings, check_problem

ROOT = Path(__file__).resolve().parents[1]


def suite_properties(folder: Path, violated: int | None) -> tuple[Path, list[Path]]:
    """The suite's network and properties (``instances.csv`` order); with ``violated`` = K, only
    the first K that ``expected.csv`` marks sat and every one it marks unsat."""
    with (folder / "instances.csv").open(newline="") as stream:
        rows = [row for row in csv.reader(stream) if row]
    networks = {row[0] for row in rows}
    if len(networks) != 1:
        raise InputError(folder / "instances.csv", None, f"names {len(networks)} networks; a suite has one")
    properties = [folder / row[1] for row in rows]
    if violated is not None:
        with (folder / "expected.csv").open(newline="") as stream:
            answer = {(folder / row["vnnlib"]): row["result"] for row in csv.DictReader(stream)}
        sat = [p for p in properties if answer.get(p) == "sat"][:violated]
        properties = [p for p in properties if p in sat or answer.get(p) == "unsat"]
    return (folder / networks.pop()).resolve(), properties


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer}


def parameters_changed(original: Path, repaired: Path) -> tuple[int, int]:
    """(entries of the original's initializers that differ in ``repaired``, entries of initializers
    that only ``repaired`` has). An initializer whose shape changed counts all its entries."""
    before, after = initializers(original), initializers(repaired)
    changed = 0
    for name, values in before.items():
        if name not in after or after[name].shape != values.shape:
            changed += values.size
        else:
            changed += int(np.count_nonzero(after[name] != values))
    added = sum(values.size for name, values in after.items() if name not in before)
    return changed, added


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Accuracy among the images of each label present."""
    return {int(c): float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels)}


def accuracy_figures(onnx_path: Path, held_out: datasets.LabelledImages, backdoor: bool) -> dict[str, float]:
    predicted = predicted_labels(onnx_path, held_out.x)
    figures = {"accuracy": float(np.mean(predicted == held_out.y)),
               "worst_class_accuracy": min(per_class_accuracy(predicted, held_out.y).values())}
    if backdoor:
        figures["attack_success_rate"] = attack_success_rate(onnx_path, held_out)
    return figures


def round_summary(iteration: Iteration) -> dict[str, object]:
    """An iteration's suite verdict, its properties' verdicts and how many each verdict had, and
    what the strategy reported of the round."""
    verdicts = list(dict(iteration.details.get("verdicts") or {}).values())  # type: ignore[call-overload]
    details = {key: value for key, value in iteration.details.items() if key != "verdicts"}
    return {"number": iteration.number, "verdict": iteration.verdict, "verify_seconds": round(iteration.verify_seconds, 1),
            "counts": {status: verdicts.count(status) for status in sorted(set(verdicts))},
            "verdicts": iteration.details.get("verdicts"), "details": json.loads(json.dumps(details, default=str))}


def archrepair_changes(items: list[str]) -> dict[str, object]:
    """``NAME=VALUE`` items as `ArchRepairSettings` fields of the field's own type."""
    defaults = ArchRepairSettings()
    return {key: type(getattr(defaults, key))(value) for key, value in (item.split("=", 1) for item in items)}


def repair_with(network: Path, properties: list[Path] | list[Spec], strategy: str, changes: dict[str, object],
                data: Path, **settings: object) -> RepairReport:
    """`check_and_fix` of the suite with ``strategy`` (argmax decisions, ``data`` as keep inputs);
    with ``changes``, ``archrepair`` runs with those `ArchRepairSettings` through the loop itself."""
    if strategy != "archrepair" or not changes:
        return check_and_fix(network, [p if isinstance(p, Spec) else str(p) for p in properties], strategy=strategy,
                             decision="argmax", data=data, **settings)  # type: ignore[arg-type]
    loaded = load_network(network)
    specs = [p if isinstance(p, Spec) else parse_vnnlib(p, n_inputs=loaded.n_inputs, n_outputs=loaded.n_outputs)
             for p in properties]
    budget = float(settings.pop("budget"))  # type: ignore[arg-type]
    deadline = Deadline(budget)
    for spec in specs:
        check_problem(loaded, spec, VerifySettings(timeout=budget))
    with np.load(data) as table:
        pair = (table["X"], table["y"])
    repair_settings = RepairSettings(budget=budget, decision="argmax", data=pair, **settings)  # type: ignore[arg-type]
    return check_and_fix_suite_network(loaded, specs, ArchRepair(ArchRepairSettings(**changes)), repair_settings, deadline)


def run_one(network: Path, properties: list[Path], strategy: str, args: argparse.Namespace, data: Path,
            workdir: Path, held_out: datasets.LabelledImages, backdoor: bool) -> dict[str, object]:
    output, kept = workdir / f"{strategy}.onnx", workdir / f"{strategy}_unproven.onnx"
    row: dict[str, object] = {"suite": args.suite.name, "strategy": strategy, "properties": len(properties)}
    started = time.monotonic()
    try:
        report = repair_with(network, properties, strategy, archrepair_changes(args.set), data, output=output,
                             budget=args.budget, verify_timeout=args.verify_timeout or args.budget / 3, keep_unproven=kept)
    except InputError as error:
        return row | {"status": f"n/a: {error}"}
    row |= {"status": report.status, "proven": report.proven, "seconds": round(time.monotonic() - started, 1),
            "suite_totals": report.suite, "rounds": len(report.iterations), "produced_by": report.produced_by,
            "per_property": report.properties, "notes": report.notes, "phase_seconds": report.phase_seconds, "iterations": [round_summary(i) for i in report.iterations]}
    candidate = output if report.written else kept if report.kept_unproven else None
    if candidate is not None:
        changed, added = parameters_changed(network, candidate)
        row |= {"after_file": "written" if report.written else "last unproven candidate",
                "after": accuracy_figures(candidate, held_out, backdoor), "parameters_changed": changed,
                "parameters_added": added}
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / f"{args.suite.name}_{strategy}{'' if report.written else '_unproven'}.onnx").write_bytes(
                candidate.read_bytes())
    return row


def fraction(figures: object, key: str) -> str:
    return f"{100 * figures[key]:.1f}" if isinstance(figures, dict) and key in figures else "-"


def print_table(rows: list[dict[str, object]], before: dict[str, float], backdoor: bool) -> None:
    extra = f" {'ASR % b→a':>13}" if backdoor else ""
    print(f"\n{'suite':<20} {'strategy':<15} {'viol.':>5} {'proven/all':>10} {'lost':>4} {'acc % b→a':>13} "
          f"{'worst cls % b→a':>16} {'changed (+added)':>17} {'time':>7}{extra}  status")
    for row in rows:
        if "proven" not in row:
            print(f"{row['suite']:<20} {row['strategy']:<15} {row['status']}")
            continue
        totals, after = row["suite_totals"], row.get("after")
        mark = "" if row.get("after_file") == "written" else "*"
        changed = "-" if "parameters_changed" not in row else f"{row['parameters_changed']} (+{row['parameters_added']})"
        asr = f" {fraction(before, 'attack_success_rate'):>6}→{fraction(after, 'attack_success_rate') + mark:<6}" \
            if backdoor else ""
        print(f"{row['suite']:<20} {row['strategy']:<15} {totals['violated_before']:>5} "
              f"{totals['proven_after']:>4}/{totals['properties']:<5} {totals['lost']:>4} "
              f"{fraction(before, 'accuracy'):>6}→{fraction(after, 'accuracy') + mark:<6} "
              f"{fraction(before, 'worst_class_accuracy'):>8}→{fraction(after, 'worst_class_accuracy') + mark:<7} "
              f"{changed:>17} {row['seconds']:>6}s{asr}  {row['status']}")
    print("* measured on the run's last (unproven) candidate; nothing was written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="a folder of specs/ (e.g. mnist_mlp_robust) or its path")
    parser.add_argument("--strategies", default="inner,birdnn")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per (suite, strategy) run")
    parser.add_argument("--verify-timeout", type=float, help="seconds per verification (default: budget / 3)")
    parser.add_argument("--violated", type=int, metavar="K",
                        help="only the first K properties expected.csv marks violated, and those it marks held")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="copy each run's repaired (or last unproven) ONNX file here")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="an ArchRepairSettings number or name")
    args = parser.parse_args(argv)
    if not args.suite.is_dir():
        args.suite = ROOT / "specs" / args.suite
    torch.set_num_threads(1)
    network, properties = suite_properties(args.suite, args.violated)
    backdoor = "backdoor" in args.suite.name
    held_out = datasets.mnist("held_out")
    before = accuracy_figures(network, held_out, backdoor)
    print(json.dumps({"suite": args.suite.name, "network": network.name, "properties": len(properties),
                      "before": before}), flush=True)
    train = datasets.mnist("train")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "mnist_train.npz"
        np.savez(data, X=train.x, y=train.y)
        for strategy in args.strategies.split(","):
            rows.append(run_one(network, properties, strategy, args, data, Path(workdir), held_out, backdoor))
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("per_property", "iterations")}), flush=True)
    print_table(rows, before, backdoor)
    if args.json:
        args.json.write_text(json.dumps({"suite": args.suite.name, "network": network.name, "before": before,
                                         "budget": args.budget, "violated_subset": args.violated,
                                         "archrepair_settings": args.set, "runs": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
