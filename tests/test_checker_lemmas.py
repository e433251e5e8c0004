"""Lemmas of ReLU-split certificates: the root bounds that the verifier's α-CROWN and MILP
refinement found. A real certificate with both kinds checks, its solver lemmas listed as trusted;
slope lemmas give bounds that hold on sampled points whatever their slopes; a tampered solver
lemma is reported as trusted with its forged value; a dropped leaf or a lemma that does not fit
the network is rejected."""

from __future__ import annotations

import json
from pathlib import Path

import certificate_files as certs
import numpy as np
import pytest
from random_nets import max_output_problem

from verirepair.checker import check_certificate
from verirepair.checker.certificate_file import Lemmas, SlopeLemma, SolverLemma
from verirepair.checker.lemmas import root_bounds
from verirepair.checker.onnx_reader import read_network
from verirepair.checker.vnnlib_reader import read_property
from verirepair.verify import VerifySettings

N_IN = 12  # above input_split_max_dims: the certifiable search is ReLU split
# MILP refinement of the second layer whatever the clause's bound, so the certificate has solver lemmas
REFINING = VerifySettings(timeout=60, milp_refine_gap=-1e9, milp_refine_layers=1)


def _problem(tmp_path: Path, seed: int, margin: float) -> tuple[Path, Path]:
    """A random 12-input ReLU MLP with three hidden layers and the property y_0 < (sampled maximum) + margin."""
    return max_output_problem(seed, N_IN, [16, 16, 16], margin, tmp_path)


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp_path = tmp_path_factory.mktemp("lemma_certificate")
    onnx_path, vnnlib_path = _problem(tmp_path, 2, 0.3)
    certificate = certs.certified(onnx_path, vnnlib_path, REFINING, tmp_path)
    return certificate, onnx_path, vnnlib_path




def test_a_certificate_with_lemmas_checks_and_lists_its_solver_lemmas(certified: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = certified
    region = certs.first_region(json.loads(certificate.read_text()))
    slope_lemmas = [lemma for lemma in region["lemmas"] if len(lemma) == 4]
    solver_lemmas = [lemma for lemma in region["lemmas"] if len(lemma) == 5]
    assert slope_lemmas and solver_lemmas and all(lemma[0] == 1 for lemma in solver_lemmas)
    assert len(region["clauses"][0]["leaves"]) > 1  # a real split tree
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok, result.message
    listed = [f"region 0: layer 1 neuron {n} {'upper' if side else 'lower'} bound {value!r}: {solver}"
              for _, n, side, value, solver in solver_lemmas]
    assert sorted(result.trusted) == sorted(listed)


def test_a_solver_lemma_tightened_past_the_truth_is_reported_as_trusted(certified: tuple[Path, Path, Path],
                                                                        tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    lemma = next(lemma for lemma in certs.first_region(data)["lemmas"] if len(lemma) == 5)
    lemma[3] = -1e3 if lemma[2] else 1e3  # the neuron's input is nowhere beyond this: a false bound
    result = check_certificate(onnx_path, vnnlib_path, certs.forged(tmp_path, data))
    assert any(f"neuron {lemma[1]} " in item and f"bound {lemma[3]!r}" in item for item in result.trusted), result


def _drop_a_leaf(data: dict) -> None:
    certs.first_region(data)["clauses"][0]["leaves"].pop()


def _lemma_on_a_missing_neuron(data: dict) -> None:
    certs.first_region(data)["lemmas"][0][1] = 16


def _one_slope_too_many(data: dict) -> None:
    next(lemma for lemma in certs.first_region(data)["lemmas"] if len(lemma) == 4)[3].append(0.5)


def _slope_neuron_not_in_the_network(data: dict) -> None:
    certs.first_region(data)["slope_neurons"][0].append(99)


@pytest.mark.parametrize("change", [_drop_a_leaf, _lemma_on_a_missing_neuron, _one_slope_too_many,
                                    _slope_neuron_not_in_the_network])
def test_a_tampered_certificate_with_lemmas_is_rejected(change, certified: tuple[Path, Path, Path],  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    change(data)
    result = check_certificate(onnx_path, vnnlib_path, certs.forged(tmp_path, data))
    assert not result.ok, result.message


def _relu_inputs(network, points: np.ndarray) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Every ReLU layer's inputs at the points, by the network's own steps."""
    found, h = [], points
    for step in network.steps:
        z = h @ step.weight.T + step.bias
        if step.activation is not None:
            found.append(z)
            z = np.maximum(z, 0.0)
        h = z
    return found


def test_the_slope_lemmas_of_a_real_certificate_tighten_the_checkers_bounds_soundly(
        certified: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = certified
    region_data = certs.first_region(json.loads(certificate.read_text()))
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    slopes = tuple(SlopeLemma(layer, neuron, bool(side), tuple(alphas))
                   for layer, neuron, side, alphas in (lemma for lemma in region_data["lemmas"] if len(lemma) == 4))
    with_lemmas, _ = root_bounds(network, region, Lemmas(tuple(map(tuple, region_data["slope_neurons"])), slopes))
    own, _ = root_bounds(network, region, Lemmas((), ()))
    assert any(np.any(low > own_low) or np.any(high < own_high)
               for (low, high), (own_low, own_high) in zip(with_lemmas, own))
    points = region.lower + np.random.default_rng(0).random((5000, N_IN)) * (region.upper - region.lower)
    for (low, high), z in zip(with_lemmas, _relu_inputs(network, points)):
        assert np.all(z >= low) and np.all(z <= high)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slope_lemmas_hold_on_sampled_points_whatever_their_slopes(seed: int, tmp_path: Path) -> None:
    """Root bounds from slope lemmas with random slopes (many outside [0, 1]) contain every
    sampled point's ReLU inputs, computed by the network's own steps."""
    rng = np.random.default_rng(seed)
    onnx_path, vnnlib_path = _problem(tmp_path, seed, 0.3)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    sizes = network.activation_sizes
    slope_neurons = tuple(tuple(sorted(rng.choice(n, n // 2, replace=False).tolist())) for n in sizes)
    entries = [SlopeLemma(layer, neuron, bool(side), tuple(rng.uniform(-1.0, 2.0, sum(map(len, slope_neurons[:layer])))))
               for layer in range(len(sizes)) for neuron in range(sizes[layer]) for side in (0, 1)]
    bounds, trusted = root_bounds(network, region, Lemmas(slope_neurons, tuple(entries)))
    assert trusted == []
    points = region.lower + rng.random((5000, N_IN)) * (region.upper - region.lower)
    for (low, high), z in zip(bounds, _relu_inputs(network, points)):
        assert np.all(z >= low) and np.all(z <= high)


def test_solver_lemmas_are_used_as_given_and_listed(tmp_path: Path) -> None:
    onnx_path, vnnlib_path = _problem(tmp_path, 0, 0.3)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    own, _ = root_bounds(network, region, Lemmas((), ()))
    middle = float((own[1][0][0, 3] + own[1][1][0, 3]) / 2)
    bounds, trusted = root_bounds(network, region, Lemmas((), (SolverLemma(1, 3, True, middle, "HiGHS"),)))
    assert bounds[1][1][0, 3] == middle and trusted == [f"layer 1 neuron 3 upper bound {middle!r}: HiGHS"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solver_lemmas_never_loosen_what_the_slope_lemmas_give(seed: int, tmp_path: Path) -> None:
    """The verifier's slope lemmas come partly from before its solver lemmas; back-substitution is
    not monotone in its bounds, so the checker replays the passes: adding solver lemmas to slope
    lemmas can only tighten every root bound (a real mnist_fc certificate was rejected otherwise)."""
    rng = np.random.default_rng(seed)
    onnx_path, vnnlib_path = _problem(tmp_path, seed, 0.3)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    sizes = network.activation_sizes
    slope_neurons = tuple(tuple(range(n)) for n in sizes)
    slopes = [SlopeLemma(layer, neuron, bool(side), tuple(rng.uniform(0.0, 1.0, sum(sizes[:layer]))))
              for layer in range(len(sizes)) for neuron in range(sizes[layer]) for side in (0, 1)]
    alone, _ = root_bounds(network, region, Lemmas(slope_neurons, tuple(slopes)))
    low, high = alone[1][0][0], alone[1][1][0]
    solver = tuple(SolverLemma(1, n, True, float((low[n] + high[n]) / 2), "HiGHS") for n in range(sizes[1]) if low[n] < high[n])
    both, trusted = root_bounds(network, region, Lemmas(slope_neurons, tuple(slopes) + solver))
    assert len(trusted) == len(solver) > 0
    for (low_a, high_a), (low_b, high_b) in zip(alone, both):
        assert np.all(low_b >= low_a) and np.all(high_b <= high_a)
