"""The three report pages: verify, repair (check-and-fix and repair) and bench."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bench import InstanceRecord, Summary
from ..bench.scoring import score_of
from ..network import Network, load_network
from ..repair import RepairReport
from ..repair.report import sample_spec_boxes
from ..spec import Box, parse_vnnlib
from . import plots
from .page import Page, verdict_badge
from .peers import PeerResult, latest_year
from .repair_figures import (
    MAP_MAX_INPUTS,
    change_on,
    class_accuracy,
    class_names,
    decision_grid,
    map_axes,
    sample_box,
)

# Boxes of one property that get a decision map each (a property with hundreds of boxes gets the first few).
MAX_MAPS = 4


def verify_page(summary: dict[str, object]) -> str:
    """The page of one `verirepair verify` run, from the same summary its ``--json`` prints."""
    page = Page(f"verirepair verify: {Path(str(summary['vnnlib'])).name} on {Path(str(summary['onnx'])).name}")
    rows: list[tuple[str, object]] = [("verdict", verdict_badge(str(summary["result"]))),
                                      ("time (s)", summary["seconds"]), ("decided by", summary["decided_by"])]
    if "trust" in summary:
        rows.append(("proof rests on", summary["trust"]))
    rows += [("network", summary["onnx"]), ("property", summary["vnnlib"]),
             ("peak memory (MB)", summary.get("peak_memory_mb", "-"))]
    page.fields(rows)
    _notes(page, summary.get("notes", []))  # type: ignore[arg-type]
    found = summary.get("counterexample")
    if isinstance(found, dict):
        page.heading("Counterexample")
        page.paragraph("An input in the property's box whose output (run by onnxruntime) violates the property.",
                       note=True)
        page.table(["input", "value"], [(f"X_{i}", float(v)) for i, v in enumerate(found["x"])])
        page.table(["output", "value"], [(f"Y_{i}", float(v)) for i, v in enumerate(found["y"])])
    return page.render()


@dataclass(frozen=True)
class FigureSettings:
    """How the repair figures are drawn: ``samples`` uniform samples of the property's boxes (and of
    ``domain`` when the run had one), the decision rule, and ``data`` (inputs, labels) for accuracy."""

    samples: int
    seed: int
    decision: str
    data: tuple[np.ndarray, np.ndarray | None] | None = None
    domain: Box | None = None


def repair_page(report: RepairReport, figures: FigureSettings) -> str:
    """The page of a check-and-fix or repair run; the figures compare the input ONNX file with the
    repaired one the run wrote (``-o``) or kept (``--keep-unproven``)."""
    page = Page(f"verirepair {report.strategy} repair: {Path(report.vnnlib).name} on {Path(report.onnx).name}")
    page.fields([
        ("outcome", verdict_badge(report.status)), ("verdict before", verdict_badge(report.verdict_before)),
        ("verdict after", verdict_badge(report.verdict_after)), ("total time (s)", round(report.total_seconds, 2)),
        ("network", report.onnx), ("property", report.vnnlib), ("strategy", report.strategy),
        ("iterations", len(report.iterations)), ("counterexamples", report.counterexamples),
        ("regions patched", report.regions_patched),
        ("parameters added", f"{report.parameters_added} (original {report.original_parameters})"),
        ("repaired network written", report.written or "-"), ("unproven attempt kept", report.kept_unproven or "-"),
        ("certificate", report.certificate or "-"),
    ])
    _notes(page, report.notes)
    if report.properties:
        page.heading("Properties of the suite")
        page.table(["property", "before", "after", "verify before (s)", "verify after (s)"],
                   [(row["property"], row["before"], row["after"] or "-", row["seconds_before"],
                     "-" if row["seconds_after"] is None else row["seconds_after"]) for row in report.properties])
        page.table(["total", "properties"], [(name.replace("_", " "), count) for name, count in report.suite.items()])
    if report.phase_seconds:
        page.heading("Time per phase")
        page.table(["phase", "seconds"], [(name, round(s, 3)) for name, s in report.phase_seconds.items()])
    if report.iterations:
        page.heading("Iterations")
        page.table(["#", "verdict", "decided by", "verify (s)"],
                   [(i.number, i.verdict, i.decided_by, round(i.verify_seconds, 3)) for i in report.iterations])
    if report.side_effects:
        page.heading("Side effects (as measured by the run)")
        page.table(["figure", "value"], _flatten(report.side_effects))
    _repair_figures(page, report, figures)
    return page.render()


def _repair_figures(page: Page, report: RepairReport, figures: FigureSettings) -> None:
    page.heading("What changed")
    if report.status == "held":
        page.paragraph("The property held before repair: nothing was changed.")
        return
    repaired_path = report.written or report.kept_unproven
    if repaired_path is None or not Path(repaired_path).exists():
        page.paragraph("No repaired network file exists for this run, so nothing is plotted: the run writes one "
                       "with -o when the repair is proven, or with --keep-unproven when it is not.")
        return
    original, repaired = load_network(report.onnx), load_network(repaired_path)
    spec = parse_vnnlib(report.vnnlib) if Path(report.vnnlib).is_file() else None
    rule = ("ranking (the whole order of the outputs; maps and accuracy show the top class, the arg-max)"
            if figures.decision == "ranking" else f"the {figures.decision} of the outputs")
    page.paragraph(f"Original: {report.onnx}; repaired: {repaired_path}. Both files run in onnxruntime; "
                   f"decisions are judged by {rule}.", note=True)
    rng = np.random.default_rng(figures.seed)
    if spec is not None and figures.samples > 0:
        samples = change_on(original, repaired, sample_spec_boxes(spec, figures.samples, figures.seed), spec)
        page.image(plots.change_histogram(samples.change, samples.violating, "samples of the property's boxes"),
                   _histogram_caption(samples.change, "uniform samples of the property's input boxes"))
    if figures.domain is not None and figures.samples > 0:
        samples = change_on(original, repaired, sample_box(figures.domain, figures.samples, rng), None)
        page.image(plots.change_histogram(samples.change, None, "samples of the repair domain"),
                   _histogram_caption(samples.change, "uniform samples of the repair domain"))
    boxes = _distinct_boxes(([r.box for r in spec.regions] if spec else []) +
                            ([figures.domain] if figures.domain is not None else []))
    if original.n_inputs > MAP_MAX_INPUTS:
        page.paragraph(f"No decision maps: the network has {original.n_inputs} inputs (maps are drawn for at "
                       f"most {MAP_MAX_INPUTS}).", note=True)
    else:
        names, naming = class_names(original.n_outputs, figures.decision)
        if len(boxes) > MAX_MAPS:
            page.paragraph(f"Decision maps for the first {MAX_MAPS} of {len(boxes)} input boxes.", note=True)
        for number, box in enumerate(boxes[:MAX_MAPS], start=1):
            axes = map_axes(box)
            if axes is None:
                page.paragraph(f"Box {number}: fewer than two inputs vary, no map.", note=True)
                continue
            grid = decision_grid(original, repaired, box, axes, figures.decision)
            fixed = ", ".join(f"input {i} = {(box.lower[i] + box.upper[i]) / 2:.4g}"
                              for i in range(box.dim) if i not in axes)
            page.image(plots.decision_maps(grid, names, f"box {number}: decision ({figures.decision})"),
                       f"Box {number}: decisions over input {axes[0]} × input {axes[1]} (the box's two widest "
                       f"sides), every other input at the box centre ({fixed or 'none'}); original, repaired, and "
                       f"where the decision changed. {naming}")
    _accuracy_figure(page, original, repaired, figures)


def _accuracy_figure(page: Page, original: Network, repaired: Network, figures: FigureSettings) -> None:
    if figures.data is None or figures.data[1] is None:
        page.paragraph("No per-class accuracy: the run had no --data with labels.", note=True)
        return
    inputs, labels = figures.data
    result = class_accuracy(original, repaired, inputs, labels, figures.decision)
    page.image(plots.class_accuracy(result.classes, result.before, result.after, result.counts),
               f"Per-class accuracy of the original and the repaired network on the {len(inputs)} points of --data.")


def _histogram_caption(change: np.ndarray, where: str) -> str:
    unchanged = int((change == 0).sum())
    return (f"|Δ output|∞ on {change.size} {where}: mean {change.mean():.4g}, max {change.max():.4g}; "
            f"{unchanged} of the {change.size} samples have exactly the same outputs.")


def _distinct_boxes(boxes: Sequence[Box]) -> list[Box]:
    seen: set[bytes] = set()
    distinct = []
    for box in boxes:
        key = box.lower.tobytes() + box.upper.tobytes()
        if key not in seen:
            seen.add(key)
            distinct.append(box)
    return distinct


def _flatten(values: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _notes(page: Page, notes: Sequence[str]) -> None:
    for note in notes:
        page.paragraph(f"Note: {note}", note=True)


SUMMARY_COLUMNS = ("benchmark", "instances", "unsat", "sat", "wrong", "cex-fail", "undecided", "median s",
                   "total s", "score")


def bench_page(family: str, summary: Summary, records: Sequence[InstanceRecord], truth: dict[tuple[str, str], str],
               peers: list[PeerResult] | None) -> str:
    """The page of a `verirepair bench` run: the family's summary, every instance, and a cactus plot
    with peers' aggregate results (``peers`` None: the benchmark has no peers file)."""
    page = Page(f"verirepair bench: {family}")
    s = dataclasses.asdict(summary)
    page.table(SUMMARY_COLUMNS, [(family, s["instances"], s["unsat"], s["sat"], s["wrong"], s["witness_failures"],
                                  s["undecided"], round(s["median_seconds"], 2), round(s["total_seconds"], 1),
                                  s["score"])])
    solved = [r.seconds for r in records if score_of(r, truth.get((r.onnx, r.vnnlib))) > 0]
    shown = latest_year(peers or [])
    page.heading("Instances solved against time")
    page.image(plots.cactus(solved, len(records), [p.mark() for p in shown], family), _cactus_caption(shown, peers))
    if shown:
        page.heading(f"Peers ({shown[0].year})")
        page.table(["tool", "instances", "unsat", "sat", "solved correctly", "median time of solved (s)"],
                   [(p.tool, p.instances, p.unsat, p.sat, p.solved_correct,
                     "-" if p.median_seconds is None else p.median_seconds) for p in shown])
    page.heading("Instances")
    page.paragraph("File names only; results.csv in the run's output folder has the paths.", note=True)
    page.table(["#", "network", "property", "result", "expected", "seconds", "decided by", "witness ok"],
               [(r.index, Path(r.onnx).name, Path(r.vnnlib).name, r.result, truth.get((r.onnx, r.vnnlib), "-"), round(r.seconds, 3),
                 r.decided_by, "-" if r.witness_ok is None else str(r.witness_ok)) for r in records])
    return page.render()


def _cactus_caption(shown: list[PeerResult], peers: list[PeerResult] | None) -> str:
    text = ("Black: the share of this run's instances solved (a correct sat or unsat; a sat counts only with a "
            "checked witness) within each time.")
    if peers is None:
        return text + " No peers_results.csv beside instances.csv: no peers are drawn."
    if not shown:
        return text + " peers_results.csv lists no tool that solved an instance: no peers are drawn."
    return text + (f" Peers (VNN-COMP {shown[0].year}, from peers_results.csv) have aggregate results only, over "
                   f"all {shown[0].instances} instances of the benchmark: a dotted line at the share each solved, "
                   "and a dot at the median time of its solved instances, at half that share (a point its own "
                   "curve passes through). Their times were measured on the competition's machines. Where this "
                   "run covers a subset of the instances, the shares compare only as far as the subset is typical.")
