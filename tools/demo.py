"""Verify every shipped (model, property) pair and compare with the expected verdicts.

    python tools/demo.py [--timeout S]

Runs ``verirepair verify`` (as ``python -m verirepair``) on each row of ``specs/expected.csv``,
prints one line per pair — verdict, time, what decided it, and for a violation what the
counterexample makes the network do — then whether every verdict matched. Exits 1 on a mismatch.
Makes the models first (``tools/make_models.py``) when they are missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "specs" / "expected.csv"
ADVISORIES = ("COC", "weak left", "weak right", "strong left", "strong right")


def meaning(model: str, y: list[float]) -> str:
    """What the network does at a counterexample, in the model's own terms."""
    if model == "collision_avoidance":  # scores; the advisory is the argmin
        return f"advisory {ADVISORIES[min(range(len(y)), key=y.__getitem__)]}"
    if model == "digits_classifier":  # logits; the predicted digit is the argmax
        return f"classified as {max(range(len(y)), key=y.__getitem__)}"
    if model == "tanh_controller":
        return f"steering {y[0]:.3f}, throttle {y[1]:.3f}"
    return f"outputs {[round(v, 3) for v in y]}"


def read_rows() -> list[dict[str, str]]:
    with EXPECTED.open(newline="") as stream:
        return list(csv.DictReader(stream))


def ensure_models() -> None:
    """Run the model generator when the table or a network it names is missing."""
    if EXPECTED.exists() and all((ROOT / row["onnx"]).exists() for row in read_rows()):
        return
    print("models missing: running tools/make_models.py", flush=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_models.py")], cwd=ROOT, check=True)


def verify(onnx: str, vnnlib: str, timeout: float) -> tuple[str, str]:
    """(status, the rest of the demo line) for one pair."""
    command = [sys.executable, "-m", "verirepair", "verify", vnnlib, onnx, "--timeout", str(timeout), "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    try:
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return "error", f"exit {done.returncode}: {reason}"
    detail = f"{summary['seconds']:6.2f}s  by {summary['decided_by']}"
    if summary.get("counterexample"):
        detail += f"; counterexample: {meaning(Path(onnx).stem, summary['counterexample']['y'])}"
    return summary["result"], detail


def check_and_fix(onnx: str, vnnlib: str, strategy: str, output: Path) -> int:
    """The headline command on a violated shipped property; the repaired file is written only
    when the verifier proves the property on it."""
    command = [sys.executable, "-m", "verirepair", "check-and-fix", vnnlib, onnx, "--strategy", strategy,
               "-o", str(output), "--budget", "120", "--decision", "argmin", "--samples", "2000"]
    print(f"\n$ verirepair check-and-fix {vnnlib} {onnx} --strategy {strategy} -o {output.relative_to(ROOT)}", flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per property (default 30)")
    args = parser.parse_args(argv)
    ensure_models()
    rows = read_rows()
    mismatches = 0
    for row in rows:
        status, detail = verify(row["onnx"], row["vnnlib"], args.timeout)
        ok = status == row["expected"]
        mismatches += not ok
        mark = "ok" if ok else f"MISMATCH (expected {row['expected']})"
        print(f"{status:7s} {Path(row['vnnlib']).stem:45s} {mark:4s}  {detail}", flush=True)
    if mismatches:
        print(f"{mismatches} of {len(rows)} verdicts differ from {EXPECTED.relative_to(ROOT)}")
        return 1
    print(f"all {len(rows)} verdicts match {EXPECTED.relative_to(ROOT)}")
    output = ROOT / "out" / "collision_avoidance_repaired.onnx"
    output.parent.mkdir(exist_ok=True)
    output.unlink(missing_ok=True)
    code = check_and_fix("models/collision_avoidance.onnx", "specs/collision_avoidance_close_left.vnnlib",
                         "birdnn-finetune", output)
    if code != 0:
        print("repair not proven within the budget (nothing written)")
        return 0
    status, detail = verify(str(output.relative_to(ROOT)), "specs/collision_avoidance_close_left.vnnlib", args.timeout)
    print(f"re-verified the written file: {status} {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
