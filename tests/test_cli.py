"""The command line: verdicts with exit codes and results files on a net with a known closed form,
counterexamples replayed independently in onnxruntime, and every kind of bad input refused with
one line (file + reason), exit 2, no traceback, inputs untouched and no results file written."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx_factory
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from verirepair.cli import main

DECLARE = "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
BOX = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
# On [0,1]^2 the tiny net computes y0 = 2·min(x0, x1) ∈ [0, 2] and y1 = |x0 - x1| ∈ [0, 1].
HOLDS = DECLARE + BOX + "(assert (or (<= Y_0 -0.01) (>= Y_1 1.01)))\n"
# Reachable, e.g. at x = (0, 1): y1 = 1 >= 0.9 and y0 = 0 <= 0.2.
VIOLATED = DECLARE + BOX + "(assert (and (>= Y_1 0.9) (<= Y_0 0.2)))\n"

TIMEOUT = ["--timeout", "30"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict[str, str]:
    """Name → sha256 of every file in ``folder`` (detects edits, new files and temp leftovers)."""
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def workdir(tmp_path: Path, tiny_mlp: Path) -> Path:
    (tmp_path / "net.onnx").write_bytes(tiny_mlp.read_bytes())
    (tmp_path / "holds.vnnlib").write_text(HOLDS)
    (tmp_path / "violated.vnnlib").write_text(VIOLATED)
    return tmp_path


# ----- verdicts --------------------------------------------------------------------------------------
def test_property_that_holds_is_unsat(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, spec, results = workdir / "net.onnx", workdir / "holds.vnnlib", workdir / "results.txt"
    before = {p: sha256(p) for p in (net, spec)}
    code, out, err = run_cli(["verify", str(net), str(spec), "--results-file", str(results)] + TIMEOUT, capsys)
    assert code == 0, err
    assert out.startswith("unsat")
    assert results.read_text().splitlines()[0] == "unsat"
    assert {p: sha256(p) for p in (net, spec)} == before
    assert set(folder_state(workdir)) == {"net.onnx", "holds.vnnlib", "violated.vnnlib", "results.txt"}


def parse_witness(text: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = re.findall(r"\(([XY])_(\d+)\s+([^\s()]+)\)", text)
    xs = {int(i): float(v) for kind, i, v in pairs if kind == "X"}
    ys = {int(i): float(v) for kind, i, v in pairs if kind == "Y"}
    assert sorted(xs) == list(range(len(xs))) and sorted(ys) == list(range(len(ys)))
    return np.array([xs[i] for i in range(len(xs))]), np.array([ys[i] for i in range(len(ys))])


@pytest.mark.parametrize("onnx_first", [True, False])
def test_violated_property_is_sat_with_a_replayable_witness(workdir: Path, onnx_first: bool,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    net, spec, results = workdir / "net.onnx", workdir / "violated.vnnlib", workdir / "results.txt"
    before = {p: sha256(p) for p in (net, spec)}
    files = [str(net), str(spec)] if onnx_first else [str(spec), str(net)]
    code, out, err = run_cli(["verify", *files, "--results-file", str(results)] + TIMEOUT, capsys)
    assert code == 10, err
    assert out.startswith("sat")
    lines = results.read_text().splitlines()
    assert lines[0] == "sat"
    assert re.search(r"\(X_0 ", lines[1]) and re.search(r"\(Y_1 [^)]+\)\)?$", lines[-1])
    assert len(lines) == 1 + 2 + 2
    x, y_written = parse_witness("\n".join(lines[1:]))
    assert x.shape == (2,) and y_written.shape == (2,)
    # Independent replay: a fresh onnxruntime session on the file, and the closed form.
    assert np.all((0.0 <= x) & (x <= 1.0)), x
    session = ort.InferenceSession(str(net), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.astype(np.float32).reshape(1, 2)})
    y = y.reshape(-1).astype(np.float64)
    assert y[1] >= 0.9 and y[0] <= 0.2, f"witness {x} gives {y}, which does not violate the property"
    np.testing.assert_allclose(y, onnx_factory.analytic_mlp_outputs(x)[0], atol=1e-6)
    np.testing.assert_allclose(y_written, y, rtol=1e-6, atol=1e-6)
    assert {p: sha256(p) for p in (net, spec)} == before


def test_json_output(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["verify", str(workdir / "violated.vnnlib"), str(workdir / "net.onnx"), "--json"] + TIMEOUT,
                             capsys)
    assert code == 10, err
    summary = json.loads(out)
    assert isinstance(summary, dict) and summary["result"] == "sat"
    x = np.array(summary["counterexample"]["x"])
    y = onnx_factory.analytic_mlp_outputs(x)[0]
    assert np.all((0 <= x) & (x <= 1)) and y[1] >= 0.9 and y[0] <= 0.2

    code, out, err = run_cli(["verify", str(workdir / "net.onnx"), str(workdir / "holds.vnnlib"), "--json"] + TIMEOUT,
                             capsys)
    assert code == 0, err
    assert json.loads(out)["result"] == "unsat"


@pytest.mark.parametrize("solver", ["auto", "highs", "gurobi"])
def test_milp_solver_option_reaches_the_verifier(solver: str, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import verirepair.verify as verify_package
    from verirepair.cli import MILP_SOLVERS
    from verirepair.milp.solvers import PREFERENCES

    assert MILP_SOLVERS == PREFERENCES
    seen = []
    real = verify_package.verify_files
    monkeypatch.setattr(verify_package, "verify_files", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    code, _, err = run_cli(["verify", str(workdir / "net.onnx"), str(workdir / "holds.vnnlib"),
                            "--milp-solver", solver] + TIMEOUT, capsys)
    assert code == 0, err
    assert [s.milp_solver for s in seen] == [solver]


def test_subprocess_module_entry_point(workdir: Path) -> None:
    """``python -m verirepair``: real exit codes and streams, good and bad input."""
    results = workdir / "results.txt"
    good = subprocess.run([sys.executable, "-m", "verirepair", "verify", str(workdir / "net.onnx"),
                           str(workdir / "violated.vnnlib"), "--results-file", str(results)] + TIMEOUT,
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 10, good.stderr
    assert results.read_text().splitlines()[0] == "sat"
    results.unlink()

    bad_net = onnx_factory.save(onnx_factory.unsupported_ops(), workdir / "bad.onnx")
    bad = subprocess.run([sys.executable, "-m", "verirepair", "verify", str(bad_net), str(workdir / "holds.vnnlib"),
                          "--results-file", str(results)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert str(bad_net) in bad.stderr and "Erf" in bad.stderr and "Softmax" in bad.stderr
    assert not results.exists()


# ----- bad input -----------------------------------------------------------------------------------
def _write_onnx(kind: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        if kind == "text":
            path.write_text("this is not a network\n")
        elif kind == "truncated":
            data = onnx_factory.analytic_mlp().SerializeToString()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "two_inputs":
            onnx_factory.save(onnx_factory.two_inputs(), path)
        elif kind == "unsupported":
            onnx_factory.save(onnx_factory.unsupported_ops(), path)
        elif kind in ("nan_weight", "inf_weight"):
            model = onnx_factory.analytic_mlp()
            weight = next(t for t in model.graph.initializer if len(t.dims) == 2)
            values = numpy_helper.to_array(weight).copy()
            values.flat[1] = np.nan if kind == "nan_weight" else -np.inf
            weight.CopyFrom(numpy_helper.from_array(values, weight.name))
            onnx_factory.save(model, path)
        elif kind != "missing":
            raise AssertionError(kind)

    return write


def _spec(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


GOOD_NET = "good"
NO_X1_UPPER = DECLARE + "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= Y_0 -1.0))\n"
EMPTY_BOX = DECLARE + "(assert (>= X_0 1.0))\n(assert (<= X_0 0.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n" \
    "(assert (<= Y_0 -1.0))\n"
THREE_INPUTS = DECLARE + "(declare-const X_2 Real)\n" + BOX + "(assert (>= X_2 0.0))\n(assert (<= X_2 1.0))\n" \
    "(assert (<= Y_0 -1.0))\n"

# case → (how to write net.onnx or GOOD_NET, how to write spec.vnnlib or None for the missing file,
#         which file the message must name, words the reason must contain)
BAD_CASES: dict[str, tuple[object, object, str, tuple[str, ...]]] = {
    "missing_onnx": (_write_onnx("missing"), _spec(HOLDS), "onnx", ("no such file",)),
    "missing_vnnlib": (GOOD_NET, None, "vnnlib", ("no such file",)),
    "not_onnx": (_write_onnx("text"), _spec(HOLDS), "onnx", ("ONNX",)),
    "truncated_onnx": (_write_onnx("truncated"), _spec(HOLDS), "onnx", ("ONNX",)),
    "several_inputs": (_write_onnx("two_inputs"), _spec(HOLDS), "onnx", ("left", "right", "input")),
    "unsupported_operator": (_write_onnx("unsupported"), _spec(HOLDS), "onnx", ("Erf", "Softmax", "unsupported")),
    # a NaN bound compares false with everything, and such a network was "proven" (issue 23)
    "nan_weight": (_write_onnx("nan_weight"), _spec(HOLDS), "onnx", ("NaN or infinite", "initializers")),
    "inf_weight": (_write_onnx("inf_weight"), _spec(HOLDS), "onnx", ("NaN or infinite", "initializers")),
    "vnnlib_syntax": (GOOD_NET, _spec(HOLDS + "(assert (<= Y_0 1.0)\n"), "vnnlib", ("never closed",)),
    "undeclared_variable": (GOOD_NET, _spec(DECLARE + BOX + "(assert (<= Y_7 1.0))\n"),
                            "vnnlib", ("undeclared", "Y_7")),
    "variable_count": (GOOD_NET, _spec(THREE_INPUTS), "vnnlib", ("3 inputs", "network has 2")),
    "unbounded_box": (GOOD_NET, _spec(NO_X1_UPPER), "vnnlib", ("X_1", "no upper bound")),
    "empty_box": (GOOD_NET, _spec(EMPTY_BOX), "vnnlib", ("empty input box", "X_0")),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_refused_cleanly(case: str, tmp_path: Path, tiny_mlp: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    write_net, write_spec, named, words = BAD_CASES[case]
    net, spec = tmp_path / "net.onnx", tmp_path / "spec.vnnlib"
    if write_net == GOOD_NET:
        net.write_bytes(tiny_mlp.read_bytes())
    else:
        write_net(net)  # type: ignore[operator]
    if write_spec is not None:
        write_spec(spec)  # type: ignore[operator]
    before = folder_state(tmp_path)
    results = tmp_path / "results.txt"

    code, out, err = run_cli(["verify", str(net), str(spec), "--results-file", str(results)] + TIMEOUT, capsys)

    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(net if named == "onnx" else spec) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not results.exists()
    assert folder_state(tmp_path) == before, "input files changed or a file was left behind"


@pytest.mark.parametrize("where", ["folder", "missing_folder"])
def test_unwritable_results_file_is_refused_before_verifying(where: str, workdir: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    net, spec = workdir / "net.onnx", workdir / "holds.vnnlib"
    target = workdir if where == "folder" else workdir / "no_such_folder" / "results.txt"
    before = folder_state(workdir)
    code, out, err = run_cli(["verify", str(net), str(spec), "--results-file", str(target)] + TIMEOUT, capsys)
    assert code == 2 and "Traceback" not in err, (out, err)
    assert len(err.strip().splitlines()) == 1 and str(target) in err and "cannot write" in err, err
    assert out == ""  # refused before any verification ran
    assert folder_state(workdir) == before


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_non_positive_timeout_is_a_usage_error(timeout: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = workdir / "results.txt"
    before = folder_state(workdir)
    with pytest.raises(SystemExit) as caught:
        main(["verify", str(workdir / "net.onnx"), str(workdir / "holds.vnnlib"), "--timeout", timeout,
              "--results-file", str(results)])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--timeout" in err and ("positive" in err or "number" in err), err
    assert not results.exists()
    assert folder_state(workdir) == before


# ----- other commands ------------------------------------------------------------------------------
def test_area_repair_command_is_not_yet_built(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`repair` without --points (area repair as a single strategy run) answers "not yet"."""
    before = folder_state(workdir)
    code, out, err = run_cli(["repair", str(workdir / "net.onnx"), "-o", str(workdir / "out.onnx")], capsys)
    assert code == 4
    assert "not yet" in err and "Traceback" not in err
    assert folder_state(workdir) == before


def test_info_describes_both_kinds_of_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, spec = workdir / "net.onnx", workdir / "holds.vnnlib"
    code, out, err = run_cli(["info", str(net), str(spec)], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{net}: ONNX") and "[1, 2]" in lines[0] and "Gemm" in lines[0] and "Relu" in lines[0]
    assert lines[1].startswith(f"{spec}: VNN-LIB") and "2 inputs" in lines[1] and "2 outputs" in lines[1]


def test_info_on_a_bad_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = onnx_factory.save(onnx_factory.two_outputs(), tmp_path / "two_outputs.onnx")
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(path) in err and "second_out" in err


@pytest.mark.parametrize("command", ["check-and-fix", "repair"])
def test_strategy_help_names_every_registered_strategy(command: str, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from verirepair.repair import available

    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside hyphenated names
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in available())


def test_internal_error_is_one_line_and_exit_3_with_the_traceback_under_debug(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN bound (or any bug) is never a verdict: one line, exit 3; ``--debug`` re-raises it."""
    import verirepair.verify as verify_package
    from verirepair.verify.objective import NaNBound, still_open

    def nan_bound(*args, **kwargs):  # type: ignore[no-untyped-def]
        import torch

        return still_open(torch.tensor([0.5, float("nan")]), 1e-9)

    monkeypatch.setattr(verify_package, "verify_files", nan_bound)
    net, spec = workdir / "net.onnx", workdir / "holds.vnnlib"
    code, out, err = run_cli(["verify", str(net), str(spec)] + TIMEOUT, capsys)
    assert code == 3 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and "internal error: NaNBound" in err and "Traceback" not in err
    with pytest.raises(NaNBound):
        main(["--debug", "verify", str(net), str(spec)] + TIMEOUT)


def test_settings_out_of_range_raise_their_own_error_type() -> None:
    """`main` reports a `SettingsError` as bad input (exit 2) and any other exception as internal
    (exit 3), so settings must not raise a bare ValueError."""
    from verirepair.errors import SettingsError
    from verirepair.milp import MilpSettings
    from verirepair.repair import RepairSettings
    from verirepair.verify import VerifySettings

    for make in (lambda: VerifySettings(timeout=-1), lambda: MilpSettings(threads=0),
                 lambda: RepairSettings(budget=-1.0)):
        with pytest.raises(SettingsError):
            make()
