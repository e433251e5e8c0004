"""``check-and-fix --certificate F``: a proof certificate for the file the run proved.

The certificate is checked by the independent checker (`check-certificate`), against the file it
names: the repaired network as written (accepted) and the original network (refused, its SHA-256
differs). When the property held already, the certificate is for the original file.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_factory
import pytest
from random_nets import random_mlp, save_onnx
from test_repair_loop import (
    SPEC as HOLDS,  # output 0 the largest: never, for onnx_factory.mlp(2, 8, 3, seed=0)
)

import verirepair
from verirepair.cli import main
from verirepair.errors import InputError, SettingsError

REPO = Path(__file__).resolve().parents[1]
NETWORK = REPO / "models" / "collision_avoidance.onnx"
VIOLATED = REPO / "specs" / "collision_avoidance_close_left.vnnlib"  # sat in specs/expected.csv



def test_the_certificate_of_a_repair_checks_on_the_written_file_only(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, proof = tmp_path / "repaired.onnx", tmp_path / "proof.json"
    code = main(["-q", "check-and-fix", str(VIOLATED), str(NETWORK), "--strategy", "birdnn-finetune", "--budget", "300",
                 "--samples", "200", "--no-polish", "-o", str(out), "--certificate", str(proof)])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("repaired:"), printed
    assert f"certificate: {proof}" in printed and out.exists() and proof.exists()
    assert main(["check-certificate", str(proof), str(VIOLATED), str(out)]) == 0
    assert capsys.readouterr().out.startswith("valid:")
    assert main(["check-certificate", str(proof), str(VIOLATED), str(NETWORK)]) == 30
    assert "SHA-256 differs" in capsys.readouterr().out


@pytest.fixture
def holds(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "holds.vnnlib"
    spec.write_text(HOLDS)
    return onnx_factory.save(onnx_factory.mlp(2, 8, 3, seed=0), tmp_path / "holds.onnx"), spec


def test_when_the_property_holds_the_certificate_is_for_the_original(holds: tuple[Path, Path], tmp_path: Path) -> None:
    network, spec = holds
    proof, out = tmp_path / "proof.json", tmp_path / "unused.onnx"
    report = verirepair.check_and_fix(network, spec, strategy="reassure", output=out, certificate=proof, budget=60,
                                      side_effect_samples=0)
    assert report.status == "held" and report.certificate == str(proof) and not out.exists()
    assert verirepair.check_certificate(network, spec, proof).ok


def test_a_tanh_proof_gets_a_certificate(tmp_path: Path) -> None:
    network = REPO / "models" / "tanh_controller.onnx"
    spec = tmp_path / "far.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))" for i in range(3)]
    spec.write_text("\n".join(lines + ["(assert (>= Y_0 1000.0))", ""]))
    proof = tmp_path / "proof.json"
    report = verirepair.check_and_fix(network, spec, strategy="birdnn", certificate=proof, budget=60,
                                      side_effect_samples=0)
    assert report.status == "held" and report.proven and report.certificate == str(proof), report.notes
    assert verirepair.check_certificate(network, spec, proof).ok


def test_a_proof_that_gives_no_certificate_is_still_a_proof(tmp_path: Path) -> None:
    """A 12-input tanh network and a clause of two rows: neuron splitting proves one row at a
    time, so the clause is proven by α-CROWN on the whole box, which gives no certificate."""
    network = save_onnx(random_mlp(0, 12, [8, 8], 2, "tanh", scale=1.0), tmp_path / "tanh.onnx")
    spec = tmp_path / "far.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(12)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))" for i in range(12)]
    spec.write_text("\n".join(lines + ["(assert (>= Y_0 1000.0))", "(assert (>= Y_1 1000.0))", ""]))
    proof = tmp_path / "proof.json"
    report = verirepair.check_and_fix(network, spec, strategy="birdnn", certificate=proof, budget=60,
                                      side_effect_samples=0)
    assert report.status == "held" and report.proven and report.certificate is None and not proof.exists()
    assert any(note.startswith("no certificate: ") and "certifiable proof" in note for note in report.notes), report.notes


def test_the_certificate_option_is_checked_before_any_work(holds: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    network, spec = holds
    unwritable = tmp_path / "no-such-folder" / "proof.json"
    assert main(["check-and-fix", str(spec), str(network), "--certificate", str(unwritable)]) == 2
    assert str(unwritable) in capsys.readouterr().err
    with pytest.raises(InputError, match="give both as file paths"):
        verirepair.check_and_fix(onnx.load(str(network)), spec, strategy="reassure",
                                 certificate=tmp_path / "proof.json")
    with pytest.raises(SettingsError, match="different file"):
        verirepair.check_and_fix(network, spec, strategy="reassure", output=tmp_path / "same",
                                  certificate=tmp_path / "same")
