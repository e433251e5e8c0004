"""The Python API (`verirepair.api`): its verdicts are the command line's on the same files, every
form of network (path, ModelProto, Network) and property (path, Spec) gives the same verdict, a
sat's counterexample is confirmed here in onnxruntime, and bad input raises `InputError` naming
the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_factory
import onnxruntime as ort
import pytest
from test_cli import HOLDS, VIOLATED, folder_state, workdir  # noqa: F401 - workdir: the CLI tests' fixture
from test_repair_loop import SPEC as REPAIR_SPEC

import verirepair
from verirepair.cli import EXIT_CODES, main
from verirepair.errors import InputError, NotYet, SettingsError
from verirepair.network import load_network
from verirepair.spec import parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0


def _cli_verdict(onnx_path: Path, vnnlib_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["verify", str(onnx_path), str(vnnlib_path), "--timeout", str(TIMEOUT), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _confirmed_in_onnxruntime(onnx_path: Path, vnnlib_path: Path, x: np.ndarray) -> bool:
    """x lies in a box of the property and onnxruntime's output there violates it."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    y = session.run(None, {feed.name: x.astype(np.float32).reshape(1, -1)})[0].reshape(-1)
    return parse_vnnlib(vnnlib_path).violation_at(x, y.astype(np.float64))


CASES = [("tiny", "holds"), ("tiny", "violated"),
         ("models/collision_avoidance.onnx", "specs/collision_avoidance_close_left.vnnlib"),
         ("models/collision_avoidance.onnx", "specs/collision_avoidance_close_left_clear.vnnlib")]


def _files(case: tuple[str, str], workdir: Path) -> tuple[Path, Path]:
    if case[0] == "tiny":
        return workdir / "net.onnx", workdir / f"{case[1]}.vnnlib"
    return ROOT / case[0], ROOT / case[1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c[1]).stem)
def test_the_api_verdict_is_the_cli_verdict(case: tuple[str, str], workdir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, vnnlib_path = _files(case, workdir)
    code, summary = _cli_verdict(onnx_path, vnnlib_path, capsys)
    verdict = verirepair.verify(onnx_path, vnnlib_path, timeout=TIMEOUT)
    assert verdict.status == summary["result"] and EXIT_CODES[verdict.status] == code
    assert verdict.status in ("sat", "unsat")
    if verdict.status == "sat":
        assert verdict.counterexample is not None
        assert _confirmed_in_onnxruntime(onnx_path, vnnlib_path, verdict.counterexample.x)
        assert _confirmed_in_onnxruntime(onnx_path, vnnlib_path, np.array(summary["counterexample"]["x"]))


@pytest.mark.parametrize("name", ["holds", "violated"])
def test_every_form_of_network_and_property_gives_the_same_verdict(name: str, workdir: Path) -> None:
    onnx_path, vnnlib_path = workdir / "net.onnx", workdir / f"{name}.vnnlib"
    before = folder_state(workdir)
    networks = [str(onnx_path), onnx_path, onnx.load(str(onnx_path)), load_network(onnx_path)]
    specs = [str(vnnlib_path), parse_vnnlib(vnnlib_path)]
    verdicts = [verirepair.verify(n, s, timeout=TIMEOUT) for n in networks for s in specs]
    assert {v.status for v in verdicts} == {"unsat" if name == "holds" else "sat"}
    for verdict in verdicts:
        if verdict.counterexample is not None:
            assert _confirmed_in_onnxruntime(onnx_path, vnnlib_path, verdict.counterexample.x)
    assert folder_state(workdir) == before  # inputs untouched, nothing left behind


def test_the_names_verify_and_bench_call_the_api_also_after_their_subpackages_are_imported(workdir: Path) -> None:
    """``verirepair.verify`` and ``verirepair.bench`` are API functions and subpackages: importing a
    subpackage rebinds the name to it, and calling it still calls the API function."""
    import verirepair.bench as bench_package
    import verirepair.verify as verify_package

    assert verirepair.verify is verify_package and verirepair.bench is bench_package
    assert verify_package(workdir / "net.onnx", workdir / "violated.vnnlib", timeout=TIMEOUT).status == "sat"
    assert verify_package.VerifySettings().timeout > 0 and bench_package.TABLE_HEADER  # still the packages
    with pytest.raises(InputError) as caught:
        bench_package(workdir / "absent.csv", out=workdir / "out")
    assert caught.value.file == str(workdir / "absent.csv")


def test_import_verirepair_loads_neither_torch_nor_onnx() -> None:
    code = "import sys, verirepair; print(sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# ----- certificates ----------------------------------------------------------------------------------
def test_a_certificate_written_by_verify_checks_in_the_api_and_the_cli(workdir: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, vnnlib_path, proof = workdir / "net.onnx", workdir / "holds.vnnlib", workdir / "proof.json"
    verdict = verirepair.verify(onnx_path, vnnlib_path, timeout=TIMEOUT, certificate=proof)
    assert verdict.status == "unsat" and verdict.notes[-1] == f"certificate written to {proof}"
    assert verirepair.check_certificate(onnx_path, vnnlib_path, proof).ok
    assert main(["check-certificate", str(proof), str(vnnlib_path), str(onnx_path)]) == 0
    assert not verirepair.check_certificate(onnx_path, workdir / "violated.vnnlib", proof).ok


def test_no_certificate_for_a_sat_and_none_without_files(workdir: Path) -> None:
    onnx_path, proof = workdir / "net.onnx", workdir / "proof.json"
    verdict = verirepair.verify(onnx_path, workdir / "violated.vnnlib", timeout=TIMEOUT, certificate=proof)
    assert verdict.status == "sat" and verdict.notes[-1] == "no certificate written: the answer is sat"
    assert not proof.exists()
    with pytest.raises(InputError, match="give both as file paths"):
        verirepair.verify(onnx.load(str(onnx_path)), workdir / "holds.vnnlib", certificate=proof)


# ----- bad input -------------------------------------------------------------------------------------
def test_a_missing_file_is_named(workdir: Path) -> None:
    missing = workdir / "absent.onnx"
    with pytest.raises(InputError) as caught:
        verirepair.verify(missing, workdir / "holds.vnnlib")
    assert caught.value.file == str(missing) and "no such file" in str(caught.value)
    with pytest.raises(InputError) as caught:
        verirepair.verify(workdir / "net.onnx", workdir / "absent.vnnlib")
    assert caught.value.file == str(workdir / "absent.vnnlib")
    with pytest.raises(InputError) as caught:
        verirepair.check_certificate(workdir / "net.onnx", workdir / "holds.vnnlib", workdir / "absent.json")
    assert caught.value.file == str(workdir / "absent.json")
    with pytest.raises(InputError) as caught:
        verirepair.bench(workdir / "absent.csv", out=workdir / "out")
    assert caught.value.file == str(workdir / "absent.csv")


def test_malformed_files_are_named_with_the_reason(workdir: Path) -> None:
    garbage = workdir / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(InputError) as caught:
        verirepair.verify(garbage, workdir / "holds.vnnlib")
    assert caught.value.file == str(garbage) and "ONNX" in caught.value.reason
    broken = workdir / "broken.vnnlib"
    broken.write_text("(declare-const X_0 Real)\n(assert (<= X_0")
    with pytest.raises(InputError) as caught:
        verirepair.verify(workdir / "net.onnx", broken)
    assert caught.value.file == str(broken)


def test_a_property_that_does_not_fit_the_network_is_refused(workdir: Path, tmp_path: Path) -> None:
    three_inputs = onnx_factory.save(onnx_factory.mlp(3, 4, 2, seed=0), tmp_path / "three.onnx")
    for spec in (workdir / "holds.vnnlib", parse_vnnlib(workdir / "holds.vnnlib")):
        with pytest.raises(InputError) as caught:
            verirepair.verify(three_inputs, spec)
        assert caught.value.file == str(workdir / "holds.vnnlib") and "3" in caught.value.reason


def test_a_bad_model_proto_is_named_as_such(workdir: Path) -> None:
    model = onnx.load(str(workdir / "net.onnx"))
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(InputError) as caught:
        verirepair.verify(model, workdir / "holds.vnnlib")
    assert caught.value.file == verirepair.api.MODEL_PROTO_LABEL and "NoSuchOp" in str(caught.value)


def test_unknown_choices_and_wrong_types_are_refused(workdir: Path) -> None:
    net, spec = workdir / "net.onnx", workdir / "violated.vnnlib"
    with pytest.raises(InputError, match="unknown MILP solver 'cplex'"):
        verirepair.verify(net, spec, milp_solver="cplex")
    with pytest.raises(InputError, match="unknown strategy 'magic'"):
        verirepair.check_and_fix(net, spec, strategy="magic")
    with pytest.raises(SettingsError, match="unknown repair setting"):
        verirepair.check_and_fix(net, spec, strategy="reassure", max_iteration=3)
    with pytest.raises(SettingsError):
        verirepair.verify(net, spec, timeout=0)
    with pytest.raises(NotYet, match="suite"):
        verirepair.check_and_fix(net, [spec, workdir / "holds.vnnlib"], strategy="reassure",
                                 certificate=workdir / "proof.json")
    with pytest.raises(TypeError, match="network"):
        verirepair.verify(42, spec)  # type: ignore[arg-type]


# ----- check-and-fix and bench -------------------------------------------------------------------------
@pytest.fixture
def repair_files(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "spec.vnnlib"
    spec.write_text(REPAIR_SPEC)
    return onnx_factory.save(onnx_factory.mlp(2, 4, 3, seed=4), tmp_path / "violated.onnx"), spec


def test_check_and_fix_writes_a_network_the_cli_proves(repair_files: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, spec = repair_files
    out = tmp_path / "fixed.onnx"
    report = verirepair.check_and_fix(onnx.load(str(onnx_path)), [spec], strategy="reassure", output=out,
                                      budget=120, verify_timeout=60, side_effect_samples=500)
    assert report.verdict_before == "sat" and report.status == "repaired" and report.proven
    assert report.written == str(out) and report.onnx == verirepair.api.MODEL_PROTO_LABEL
    code, summary = _cli_verdict(out, spec, capsys)
    assert code == 0 and summary["result"] == "unsat"


def test_check_and_fix_of_a_property_that_holds_writes_nothing(repair_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, spec = repair_files
    holds = onnx_factory.save(onnx_factory.mlp(2, 8, 3, seed=0), tmp_path / "holds.onnx")
    out = tmp_path / "fixed.onnx"
    report = verirepair.check_and_fix(load_network(holds), spec, strategy="reassure", output=out, budget=60)
    assert report.status == "held" and report.proven and not out.exists()
    assert report.onnx == str(holds)


def test_bench_gives_the_cli_bench_results(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "instances.csv").write_text("net.onnx,holds.vnnlib,30\nnet.onnx,violated.vnnlib,30\n")
    (workdir / "truth.csv").write_text("onnx,vnnlib,result\nnet.onnx,holds.vnnlib,unsat\nnet.onnx,violated.vnnlib,sat\n")
    result = verirepair.bench(workdir / "instances.csv", out=workdir / "api-out", ground_truth=workdir / "truth.csv")
    assert [r.result for r in result.records] == ["unsat", "sat"] and result.records[1].witness_ok
    assert (result.summary.wrong, result.summary.correct, result.judged) == (0, 2, 2)
    assert main(["bench", str(workdir / "instances.csv"), "--out", str(workdir / "cli-out"),
                 "--ground-truth", str(workdir / "truth.csv")]) == 0
    capsys.readouterr()

    def columns(path: Path) -> list[list[str]]:  # all but the measured seconds and memory
        rows = [line.split(",") for line in path.read_text().splitlines()]
        return [row[:3] + row[4:5] + row[6:] for row in rows]

    assert columns(result.results_csv) == columns(workdir / "cli-out" / "results.csv")
