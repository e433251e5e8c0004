"""ReLU-split certificates: real ones from the verifier check; forged ones (a flipped split, a
dropped leaf, a false property, out-of-range multipliers) are rejected; solver-trusted parts are
listed; the checker's Lagrangian bound holds on sampled points of each split domain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from random_nets import max_output_problem, random_mlp, save_onnx

from verirepair.checker import bounds as checker_bounds
from verirepair.checker import check_certificate
from verirepair.checker.onnx_reader import read_network
from verirepair.cli import main
from verirepair.spec import Box, Clause, Region, Spec, write_vnnlib
from verirepair.verify import VerifySettings
from verirepair.verify.certify import verify_with_certificate

N_IN = 12  # above input_split_max_dims: the certifiable search is ReLU split


def _problem(tmp_path: Path, seed: int, margin: float) -> tuple[Path, Path]:
    """A random 12-input ReLU MLP with two hidden layers and the property y_0 < (sampled maximum) + margin."""
    return max_output_problem(seed, N_IN, [16, 16], margin, tmp_path)


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp_path = tmp_path_factory.mktemp("relu_split_certificate")
    onnx_path, vnnlib_path = _problem(tmp_path, 8, 0.6)
    certificate = tmp_path / "proof.json"
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path, VerifySettings(timeout=60, relu_split_share=1.0),
                                               certificate)
    assert verdict.status == "unsat" and missing is None, verdict.notes
    return certificate, onnx_path, vnnlib_path


def _leaves(data: dict) -> list:
    return data["regions"][0]["clauses"][0]["leaves"]


def test_a_relu_split_certificate_checks(certified: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = certified
    leaves = _leaves(json.loads(certificate.read_text()))
    assert len(leaves) > 4 and max(len(splits) for splits, _ in leaves) >= 3  # a real split tree
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and result.trusted == (), result.message
    assert result.closings_checked == len(leaves)


def _flip_a_split(data: dict) -> None:
    deepest = max(_leaves(data), key=lambda leaf: len(leaf[0]))
    deepest[0][-1][2] = 1 - deepest[0][-1][2]


def _drop_a_leaf(data: dict) -> None:
    _leaves(data).pop(len(_leaves(data)) // 2)


def _move_a_split_to_another_neuron(data: dict) -> None:
    deepest = max(_leaves(data), key=lambda leaf: len(leaf[0]))
    deepest[0][-1][1] = (deepest[0][-1][1] + 1) % 16


def _wrong_row(data: dict) -> None:
    data["regions"][0]["clauses"][0]["row"] = 1


@pytest.mark.parametrize("change", [_flip_a_split, _drop_a_leaf, _move_a_split_to_another_neuron, _wrong_row])
def test_a_tampered_relu_split_certificate_is_rejected(change, certified: tuple[Path, Path, Path],  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    change(data)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    result = check_certificate(onnx_path, vnnlib_path, forged)
    assert not result.ok, result.message


def test_recorded_bounds_tightened_by_1e_12_leave_it_valid(certified: tuple[Path, Path, Path], tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    for _, neurons in _leaves(data):
        for neuron in neurons:
            neuron[2] += 1e-12 * abs(neuron[2])
            neuron[3] -= 1e-12 * abs(neuron[3])
    forged = tmp_path / "tightened.json"
    forged.write_text(json.dumps(data))
    assert check_certificate(onnx_path, vnnlib_path, forged).ok


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _false_problem(tmp_path: Path) -> tuple[Path, Path]:
    """The property y_0 < (sampled maximum) - 0.2: false, a sampled point violates it."""
    return _problem(tmp_path, 8, -0.2)


def _hand_built(onnx_path: Path, vnnlib_path: Path, leaves: list) -> dict:
    return {"format": "verirepair-certificate-1", "onnx_sha256": _sha256(onnx_path), "vnnlib_sha256": _sha256(vnnlib_path),
            "regions": [{"method": "relu-split", "clauses": [{"clause": 0, "row": 0, "leaves": leaves}]}]}


@pytest.mark.parametrize("alpha, beta", [(0.5, 1.0), (-3.0, -50.0), (7.0, -1e6), (0.0, 1e3)])
def test_a_certificate_of_a_false_property_is_rejected_whatever_its_multipliers(alpha: float, beta: float,
                                                                                tmp_path: Path) -> None:
    onnx_path, vnnlib_path = _false_problem(tmp_path)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    sizes = [step.weight.shape[0] for step in network.steps if step.relu]
    neurons = [[k, n, -1.0, 1.0, alpha, beta, beta] for k, size in enumerate(sizes) for n in range(size)]
    # a complete tree: the first four neurons of layer 0 split every way
    leaves = [[[[0, n, (code >> n) & 1] for n in range(4)], neurons] for code in range(16)]
    forged = tmp_path / "false.json"
    forged.write_text(json.dumps(_hand_built(onnx_path, vnnlib_path, leaves)))
    result = check_certificate(onnx_path, vnnlib_path, forged)
    assert not result.ok and "not positive" in result.message, result.message


@pytest.mark.parametrize("seed", range(4))
def test_the_lagrangian_bound_holds_on_sampled_points_of_each_split_domain(seed: int) -> None:
    """Any slopes and multipliers, in range or not, give a bound below the objective's values on
    the points of the box that meet the splits (the oracle: the network evaluated on them)."""
    rng = np.random.default_rng(seed)
    chain = random_mlp(rng, 5, [8, 8], 2, "relu", scale=1.5)
    with __import__("tempfile").TemporaryDirectory() as folder:
        path = save_onnx(chain, Path(folder) / "net.onnx")
        network = read_network(path.read_bytes(), path)
    lower, upper = np.full((1, 5), -1.0), np.full((1, 5), 1.0)
    relu_steps = [k for k, step in enumerate(network.steps) if step.relu]
    x = rng.uniform(-1, 1, (50000, 5))
    pre = []
    h = x
    for step in network.steps:
        z = h @ step.weight.T + step.bias
        if step.relu:
            pre.append(z)
            z = np.maximum(z, 0)
        h = z
    c, d = rng.standard_normal(2), float(rng.standard_normal())
    objective = h @ c + d
    for _ in range(5):
        splits, inside = [], np.ones(len(x), dtype=bool)
        for k in range(len(relu_steps)):
            active, inactive = np.zeros((1, 8), bool), np.zeros((1, 8), bool)
            for n in rng.choice(8, 2, replace=False):
                side = rng.random() < 0.5
                (active if side else inactive)[0, n] = True
                inside &= (pre[k][:, n] >= 0) if side else (pre[k][:, n] <= 0)
            splits.append((np.where(active, 0.0, -np.inf), np.where(inactive, 0.0, np.inf)))
        unrecorded = [(np.full((1, 8), np.inf), np.full((1, 8), -np.inf)) for _ in relu_steps]
        bounds = checker_bounds.layer_bounds(network, lower, upper, unrecorded, splits)
        alphas = [rng.uniform(-1, 2, (1, 8, 2)) for _ in relu_steps]
        multipliers = [(rng.uniform(-1, 3, (1, 8)), rng.uniform(-1, 3, (1, 8))) for _ in relu_steps]
        value = checker_bounds.lagrangian_bounds(network, bounds, c, d, alphas, multipliers)[0]
        if inside.any():
            assert not bounds.empty[0]
            assert value <= objective[inside].min()


def _trusted_certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    onnx_path, vnnlib_path = _problem(tmp_path, 8, 0.6)
    forged = tmp_path / "trusted.json"
    data = _hand_built(onnx_path, vnnlib_path, [])
    data["regions"][0]["clauses"] = [{"clause": 0, "solver": "HiGHS"}]
    forged.write_text(json.dumps(data))
    return forged, onnx_path, vnnlib_path


def test_solver_trusted_clauses_are_listed_and_need_allow_trusted(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    certificate, onnx_path, vnnlib_path = _trusted_certificate(tmp_path)
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and result.trusted == ("region 0: clause 0: HiGHS",)
    assert main(["check-certificate", str(certificate), str(vnnlib_path), str(onnx_path)]) == 31
    assert "solver" in capsys.readouterr().out
    assert main(["check-certificate", str(certificate), str(vnnlib_path), str(onnx_path), "--allow-trusted"]) == 0


def test_input_split_leaf_milps_are_listed_as_solver_trusted(tmp_path: Path) -> None:
    """With leaf MILPs allowed from the start, the boxes they decide are in the certificate as
    trusted nodes, the rest is re-checked, and together they cover the box."""
    rng = np.random.default_rng(3)
    chain = random_mlp(rng, 3, [8, 8], 2, "relu", scale=1.5)
    onnx_path = save_onnx(chain, tmp_path / "net.onnx")
    lower, upper = -np.ones(3), np.ones(3)
    top = chain.forward(torch.tensor(lower + rng.random((20000, 3)) * (upper - lower)))[:, 0].max().item()
    spec = Spec(3, 2, (Region(Box(lower, upper), (Clause(np.array([[-1.0, 0.0]]), np.array([-(top + 0.3)])),)),))
    vnnlib_path = tmp_path / "prop.vnnlib"
    write_vnnlib(spec, vnnlib_path)
    certificate = tmp_path / "proof.json"
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path,
                                               VerifySettings(timeout=60, leaf_milp_after_boxes=0), certificate)
    assert verdict.status == "unsat" and missing is None, verdict.notes
    trusted_nodes = [c for c in json.loads(certificate.read_text())["regions"][0] if len(c) == 3]
    assert trusted_nodes, "the problem should need a leaf MILP"
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and len(result.trusted) == len(trusted_nodes), result.message


def test_a_sigmoid_network_gets_an_activation_split_certificate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    chain = random_mlp(rng, N_IN, [8], 2, "sigmoid", scale=1.0)
    onnx_path = save_onnx(chain, tmp_path / "net.onnx")
    lower, upper = np.full(N_IN, -0.1), np.full(N_IN, 0.1)
    top = chain.forward(torch.tensor(lower + rng.random((2000, N_IN)) * (upper - lower)))[:, 0].max().item()
    spec = Spec(N_IN, 2, (Region(Box(lower, upper), (Clause(np.array([[-1.0, 0.0]]), np.array([-(top + 5.0)])),)),))
    vnnlib_path = tmp_path / "prop.vnnlib"
    write_vnnlib(spec, vnnlib_path)
    certificate = tmp_path / "proof.json"
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path, VerifySettings(timeout=30), certificate)
    assert verdict.status == "unsat" and missing is None, verdict.notes
    assert json.loads(certificate.read_text())["regions"][0]["method"] == "activation-split"
    assert check_certificate(onnx_path, vnnlib_path, certificate).ok
