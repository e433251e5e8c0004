"""Proof certificates written by the verifier for input-split unsat answers, re-checked by the
independent checker (forged certificates: tests/test_checker.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from random_nets import random_mlp, save_onnx

from verirepair.checker import check_certificate
from verirepair.cli import main
from verirepair.spec import Box, Clause, Region, Spec, write_vnnlib
from verirepair.verify import Certificate, VerifySettings, file_sha256, verify_files


def _holding_problem(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """A random ReLU net and a property that holds: y_0 stays below its sampled maximum + 0.5."""
    rng = np.random.default_rng(seed)
    chain = random_mlp(rng, 3, [8, 8], 2, "relu", scale=1.5)
    onnx_path = save_onnx(chain, tmp_path / "net.onnx")
    lower, upper = -np.ones(3), np.ones(3)
    import torch

    samples = torch.tensor(lower + rng.random((20000, 3)) * (upper - lower))
    top = chain.forward(samples)[:, 0].max().item()
    # violation: y_0 >= top + 0.5, i.e. -y_0 <= -(top + 0.5)
    spec = Spec(3, 2, (Region(Box(lower, upper), (Clause(np.array([[-1.0, 0.0]]), np.array([-(top + 0.5)])),)),))
    vnnlib_path = tmp_path / "prop.vnnlib"
    write_vnnlib(spec, vnnlib_path)
    return onnx_path, vnnlib_path


@pytest.fixture
def certified(tmp_path: Path) -> tuple[Path, Path, Path]:
    onnx_path, vnnlib_path = _holding_problem(tmp_path, 3)
    proofs: list = []
    verdict = verify_files(onnx_path, vnnlib_path, VerifySettings(timeout=60), proofs)
    assert verdict.status == "unsat"
    certificate_path = tmp_path / "proof.json"
    Certificate(file_sha256(onnx_path), file_sha256(vnnlib_path), proofs).write(certificate_path)
    return certificate_path, onnx_path, vnnlib_path


def test_certificate_of_a_proof_checks(certified: tuple[Path, Path, Path]) -> None:
    certificate_path, onnx_path, vnnlib_path = certified
    result = check_certificate(onnx_path, vnnlib_path, certificate_path)
    assert result.ok, result.message
    assert result.closings_checked >= 1


def test_certificate_for_other_files_is_rejected(certified: tuple[Path, Path, Path], tmp_path: Path) -> None:
    certificate_path, onnx_path, _ = certified
    other = tmp_path / "other.vnnlib"
    other.write_text(Path(certified[2]).read_text() + "\n; changed\n")
    assert not check_certificate(onnx_path, other, certificate_path).ok


def test_cli_writes_and_checks_a_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, vnnlib_path = _holding_problem(tmp_path, 5)
    certificate_path = tmp_path / "cli-proof.json"
    assert main(["verify", str(vnnlib_path), str(onnx_path), "--certificate", str(certificate_path)]) == 0
    assert certificate_path.exists()
    assert main(["check-certificate", str(certificate_path), str(onnx_path), str(vnnlib_path)]) == 0
    assert "valid" in capsys.readouterr().out
