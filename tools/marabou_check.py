"""Run Marabou 2.0 on repaired ONNX files: do other verifiers read (and prove) what verirepair writes?

    python tools/marabou_check.py                                  # repair ACAS Xu N2,1 / property 2 with
                                                                   # each strategy, then run Marabou on each file
    python tools/marabou_check.py --strategies reassure-boxes,birdnn --timeout 120 --json
    python tools/marabou_check.py --pair fixed.onnx prop.vnnlib --pair other.onnx prop.vnnlib

Marabou runs from its own virtual environment (``--venv``, made with ``pip install maraboupy==2.0.0
'numpy<2'`` when missing; the wheel carries the ``Marabou`` command, which reads ONNX and VNN-LIB).
Each file gets ``--timeout`` seconds; Marabou's own timeout does not cover reading the network, so
the run is killed at the limit plus a few seconds and reported as ``timeout``. Marabou's verdict
is printed as it said it: ``unsat`` means it proved the property, ``sat`` that it found a
counterexample, ``error: ...`` that it could not read or run the file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACASXU = ROOT.parent / "shared" / "benchmarks" / "acasxu"
DEFAULT_NETWORK = ACASXU / "onnx" / "ACASXU_run2a_2_1_batch_2000.onnx"
DEFAULT_PROPERTY = ACASXU / "vnnlib" / "prop_2.vnnlib"
DEFAULT_STRATEGIES = "reassure-boxes,reassure,birdnn"
MARABOU_REQUIREMENTS = ["maraboupy==2.0.0", "numpy<2"]
GRACE_SECONDS = 10.0  # past --timeout before the run is killed (reading the file is not timed by Marabou)
VERDICTS = ("unsat", "sat", "timeout", "unknown", "error")  # Marabou prints them in either case


@dataclass
class Check:
    file: str
    strategy: str  # the repair strategy that wrote the file, or "-" for a given file
    verdict: str
    seconds: float


def marabou_command(venv_dir: Path) -> Path:
    """The ``Marabou`` command of ``venv_dir``, creating the environment when it is missing;
    exits with one line when pip cannot install it."""
    command = venv_dir / "bin" / "Marabou"
    if command.exists():
        return command
    venv.create(venv_dir, with_pip=True)
    done = subprocess.run([str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", *MARABOU_REQUIREMENTS],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0 or not command.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"marabou_check: pip could not install {' '.join(MARABOU_REQUIREMENTS)} into {venv_dir}: {last}")
    return command


def verdict_of(output: str) -> str:
    """Marabou's verdict: the first line that is one of its verdict words, else an error with the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower() in VERDICTS:
            return line.lower()
    return "error: " + (lines[-1][:160] if lines else "no output")


def run_marabou(command: Path, network: Path, prop: Path, timeout: float) -> tuple[str, float]:
    """Marabou's verdict on ``network`` / ``prop`` and the seconds it took; killed (with its
    process group) at ``timeout`` plus `GRACE_SECONDS`."""
    started = time.monotonic()
    child = subprocess.Popen([str(command), str(network), str(prop), "--timeout", str(int(timeout)), "--verbosity", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=timeout + GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return "timeout", time.monotonic() - started
    return verdict_of(output), time.monotonic() - started


def repaired_files(strategies: list[str], network: Path, prop: Path, folder: Path, budget: float) -> list[tuple[Path, str, str]]:
    """(file, strategy, repair status) per strategy: ``verirepair check-and-fix`` of ``network`` /
    ``prop``; the file is the proven one, else the last candidate (``--keep-unproven``); each
    repair's report goes beside it."""
    out = []
    for name in strategies:
        proven, kept = folder / f"{network.stem}.{name}.onnx", folder / f"{network.stem}.{name}.unproven.onnx"
        done = subprocess.run([sys.executable, "-m", "verirepair", "check-and-fix", str(network), str(prop), "--strategy", name,
                               "--budget", str(budget), "-o", str(proven), "--keep-unproven", str(kept), "--json",
                               "--report", str(folder / f"{network.stem}.{name}.report.json")],
                              check=False, capture_output=True, text=True)
        try:
            status = str(json.loads(done.stdout)["status"])
        except (ValueError, KeyError):
            status = "error: " + ((done.stderr.strip().splitlines() or ["no output"])[-1])
        written = proven if proven.exists() else kept
        out.append((written, name, status))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, action="append", metavar=("ONNX", "VNNLIB"),
                        help="a repaired file and its property (repeatable); without it, repair the default instance")
    parser.add_argument("--network", type=Path, default=DEFAULT_NETWORK, help="the network to repair (default: ACAS Xu N2,1)")
    parser.add_argument("--property", type=Path, default=DEFAULT_PROPERTY, help="its property (default: ACAS Xu property 2)")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, help=f"comma-separated (default: {DEFAULT_STRATEGIES})")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per repair (default: 300)")
    parser.add_argument("--out", type=Path, help="folder for the repaired files (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds of Marabou per file (default: 120)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/marabou-venv"),
                        help="Marabou's virtual environment, made when missing (default: /tmp/marabou-venv)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    command = marabou_command(args.venv)
    with tempfile.TemporaryDirectory(prefix="marabou-check-") as scratch:
        if args.pair:
            todo = [(Path(onnx), Path(prop), "-", "given") for onnx, prop in args.pair]
        else:
            folder = args.out or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            todo = [(file, args.property, name, status)
                    for file, name, status in repaired_files(args.strategies.split(","), args.network, args.property,
                                                              folder, args.budget)]
        checks = []
        for file, prop, name, status in todo:
            if not file.exists():
                checks.append(Check(str(file), name, f"not run: nothing written ({status})", 0.0))
                continue
            verdict, seconds = run_marabou(command, file, prop, args.timeout)
            label = name if status in ("given", "repaired") else f"{name} ({status})"
            checks.append(Check(str(file), label, verdict, round(seconds, 1)))
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(f"{'file':<48} {'strategy':<28} {'Marabou':<12} {'seconds':>8}")
        for c in checks:
            print(f"{Path(c.file).name:<48} {c.strategy:<28} {c.verdict:<12} {c.seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
