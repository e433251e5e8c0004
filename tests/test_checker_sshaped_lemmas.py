"""Lemmas of activation-split certificates on sigmoid and tanh networks: the root bounds that the
verifier's α-CROWN found, recorded as the slopes of both lines of every sigmoid/tanh neuron
behind each bound and re-derived by the checker. On a random sigmoid and a random tanh network
whose property CROWN's intermediate bounds cannot prove but α-CROWN's can, the certificate checks
and its lemma bounds hold on sampled points (the network's own steps, checked against
onnxruntime); forged slopes (moved, out of range, mirrored) give bounds that still hold, and a
certificate that needs the lemmas is rejected without them or with forged ones; lemmas on
neurons the network does not have, or with one slope per sigmoid neuron, are rejected."""

from __future__ import annotations

import json
from pathlib import Path

import certificate_files as certs
import numpy as np
import onnxruntime as ort
import pytest
import torch
from dense_chain import ActivationLayer, Chain
from random_nets import random_mlp, save_onnx

from verirepair.bounds import BoundEngine, build_graph
from verirepair.checker import check_certificate
from verirepair.checker.certificate_file import Lemmas, SlopeLemma
from verirepair.checker.lemmas import root_bounds
from verirepair.checker.onnx_reader import DenseNetwork, read_network
from verirepair.checker.vnnlib_reader import read_property
from verirepair.network import load_network
from verirepair.spec import Box, Clause, Region, Spec, write_vnnlib
from verirepair.verify import VerifySettings
from verirepair.verify.certify import verify_with_certificate

N_IN, WIDTH, DEPTH = 12, 16, 4  # more inputs than input split takes: the certifiable search is activation split
# (activation, seed, weight scale): random networks on which α-CROWN's intermediate bounds beat CROWN's
NETWORKS = {"sigmoid": ("sigmoid", 2, 2.0), "tanh": ("tanh", 0, 1.0)}


def _chain(activation: str, seed: int, scale: float) -> Chain:
    chain = random_mlp(seed, N_IN, [WIDTH] * DEPTH, 2, activation, scale=scale)
    return Chain(tuple(ActivationLayer(activation, layer.size) if isinstance(layer, ActivationLayer) else layer
                       for layer in chain.layers))


def _upper_bound_of_y0(onnx_path: Path, box: Box, alpha_intermediate: bool) -> float:
    """The verifier's α-CROWN upper bound of y_0 on the box, over CROWN's intermediate bounds or
    over α-CROWN-optimised ones."""
    engine = BoundEngine(build_graph(load_network(onnx_path)))
    lower, upper = torch.tensor(box.lower)[None], torch.tensor(box.upper)[None]
    with torch.no_grad():
        layers = engine.layer_bounds(lower, upper, "crown")
        if alpha_intermediate:
            layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=60, prior=layers)
    C = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    return -float(engine.output_bounds(lower, upper, C, method="alpha-crown", alpha_steps=30, layers=layers).lower[0, 0])


def _property(path: Path, box: Box, threshold: float) -> Path:
    write_vnnlib(Spec(N_IN, 2, (Region(box, (Clause(np.array([[-1.0, 0.0]]), np.array([-threshold])),)),)), path)
    return path


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def certified(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The property y_0 < t with t halfway between what α-CROWN's intermediate bounds prove and
    what CROWN's prove: its proof needs the lemmas."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    onnx_path = save_onnx(_chain(*NETWORKS[request.param]), tmp_path / "net.onnx")
    box = Box(np.full(N_IN, -0.5), np.full(N_IN, 0.5))
    with_alpha, with_crown = (_upper_bound_of_y0(onnx_path, box, alpha) for alpha in (True, False))
    assert with_alpha < with_crown
    vnnlib_path = _property(tmp_path / "prop.vnnlib", box, (with_alpha + with_crown) / 2)
    certificate = certs.certified(onnx_path, vnnlib_path, VerifySettings(timeout=60), tmp_path)
    return certificate, onnx_path, vnnlib_path




def _activation_inputs(network: DenseNetwork, points: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every activation layer's inputs at the points, and the outputs, by the network's own steps."""
    functions = {"Sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "Tanh": np.tanh}
    found, h = [], points
    for step in network.steps:
        z = h @ step.weight.T + step.bias
        if step.activation is not None:
            found.append(z)
            z = functions[step.activation](z)
        h = z
    return found, h


def _sampled(network: DenseNetwork, onnx_path: Path, region, count: int = 5000) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """The activation inputs at random points of the region's box; the steps' outputs agree with onnxruntime."""
    points = region.lower + np.random.default_rng(0).random((count, N_IN)) * (region.upper - region.lower)
    inputs, outputs = _activation_inputs(network, points)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = session.run(None, {name: points.astype(np.float32)})[0]
    assert np.allclose(outputs, expected, atol=1e-5)
    return inputs


def _slope_lemmas(region_data: dict) -> Lemmas:
    return Lemmas(tuple(map(tuple, region_data["slope_neurons"])),
                  tuple(SlopeLemma(layer, neuron, bool(side), tuple(slopes))
                        for layer, neuron, side, slopes in region_data["lemmas"]))


def test_a_certificate_with_sshaped_lemmas_checks_and_its_bounds_hold(certified: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = certified
    region_data = certs.first_region(json.loads(certificate.read_text()))
    assert region_data["method"] == "activation-split"
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    # two slopes (lower and upper line) per slope neuron of the layers before
    assert region_data["lemmas"] and all(
        len(slopes) == 2 * sum(map(len, region_data["slope_neurons"][:layer]))
        for layer, _, _, slopes in region_data["lemmas"])
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and not result.trusted, result.message
    with_lemmas, _ = root_bounds(network, region, _slope_lemmas(region_data))
    own, _ = root_bounds(network, region, Lemmas((), ()))
    assert any(np.any(low > own_low) or np.any(high < own_high)
               for (low, high), (own_low, own_high) in zip(with_lemmas, own))
    for (low, high), z in zip(with_lemmas, _sampled(network, onnx_path, region)):
        assert np.all(z >= low) and np.all(z <= high)


def test_the_certificate_needs_its_lemmas(certified: tuple[Path, Path, Path], tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    del certs.first_region(data)["lemmas"], certs.first_region(data)["slope_neurons"]
    result = check_certificate(onnx_path, vnnlib_path, certs.forged(tmp_path, data))
    assert not result.ok and "not positive" in result.message, result.message


def _forge(rng: np.random.Generator, slopes: list[float], how: str) -> list[float]:
    pairs = np.array(slopes).reshape(-1, 2)
    if how == "moved":  # each line's slope moved by up to ±0.5: most lines far from any tangent
        pairs = pairs + rng.uniform(-0.5, 0.5, pairs.shape)
    elif how == "mirrored":  # the lower line takes the upper one's slope and back
        pairs = pairs[:, ::-1]
    else:  # out of range: steep and negative slopes
        pairs = rng.choice([-3.0, -1e6, 2.0, 1e6], pairs.shape)
    return [float(s) for s in pairs.reshape(-1)]


@pytest.mark.parametrize("how", ["moved", "mirrored", "out of range"])
def test_forged_slopes_only_weaken_the_bounds(how: str, certified: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Whatever the slopes, each line's offset is the checker's own for that slope on the
    interval it derived: the bounds hold on sampled points, and the proof, which needed the real
    slopes, is rejected."""
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    rng = np.random.default_rng(1)
    for lemma in certs.first_region(data)["lemmas"]:
        lemma[3] = _forge(rng, lemma[3], how)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    forged, _ = root_bounds(network, region, _slope_lemmas(certs.first_region(data)))
    for (low, high), z in zip(forged, _sampled(network, onnx_path, region)):
        assert np.all(z >= low) and np.all(z <= high)
    result = check_certificate(onnx_path, vnnlib_path, certs.forged(tmp_path, data))
    assert not result.ok and "not positive" in result.message, result.message


def _on_a_missing_neuron(data: dict) -> None:
    certs.first_region(data)["lemmas"][0][1] = WIDTH


def _on_a_missing_layer(data: dict) -> None:
    certs.first_region(data)["lemmas"][0][0] = DEPTH


def _one_slope_per_neuron(data: dict) -> None:
    lemma = certs.first_region(data)["lemmas"][0]
    lemma[3] = lemma[3][::2]


def _slope_neuron_not_in_the_network(data: dict) -> None:
    certs.first_region(data)["slope_neurons"][0].append(WIDTH + 3)


@pytest.mark.parametrize("change", [_on_a_missing_neuron, _on_a_missing_layer, _one_slope_per_neuron,
                                    _slope_neuron_not_in_the_network])
def test_lemmas_that_do_not_fit_the_network_are_rejected(change, certified: tuple[Path, Path, Path],  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = certified
    data = json.loads(certificate.read_text())
    change(data)
    result = check_certificate(onnx_path, vnnlib_path, certs.forged(tmp_path, data))
    assert not result.ok and ("not in the network" in result.message or "slope" in result.message), result.message


@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
def test_random_sshaped_slope_lemmas_hold_on_sampled_points(kind: str, tmp_path: Path) -> None:
    """Root bounds from lemmas with random slopes, on random subsets of the neurons, contain every
    sampled point's activation inputs."""
    rng = np.random.default_rng(3)
    onnx_path = save_onnx(_chain(kind.lower(), 5, 1.5), tmp_path / "net.onnx")
    vnnlib_path = _property(tmp_path / "prop.vnnlib", Box(np.full(N_IN, -0.5), np.full(N_IN, 0.5)), 0.0)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    region = read_property(vnnlib_path.read_text()).regions[0]
    sizes = network.activation_sizes
    slope_neurons = tuple(tuple(sorted(rng.choice(n, n // 2, replace=False).tolist())) for n in sizes)
    entries = tuple(SlopeLemma(layer, neuron, bool(side),
                               tuple(rng.uniform(-0.5, 1.5, 2 * sum(map(len, slope_neurons[:layer])))))
                    for layer in range(len(sizes)) for neuron in range(sizes[layer]) for side in (0, 1))
    bounds, trusted = root_bounds(network, region, Lemmas(slope_neurons, entries))
    assert trusted == []
    for (low, high), z in zip(bounds, _sampled(network, onnx_path, region)):
        assert np.all(z >= low) and np.all(z <= high)


def test_a_clause_activation_split_cannot_take_is_decided_from_the_same_root_bounds(tmp_path: Path) -> None:
    """A clause of two rows (neuron splitting takes single rows) that only α-CROWN's intermediate
    bounds refute: no certificate, and the uncertified search decides it from the root bounds the
    certified attempt computed (the escalated α-CROWN run is not repeated)."""
    onnx_path = save_onnx(_chain(*NETWORKS["sigmoid"]), tmp_path / "net.onnx")
    box = Box(np.full(N_IN, -0.5), np.full(N_IN, 0.5))
    threshold = sum(_upper_bound_of_y0(onnx_path, box, alpha) for alpha in (True, False)) / 2
    rows = Clause(np.array([[-1.0, 0.0], [0.0, -1.0]]), np.array([-threshold, 1e3]))  # y_0 >= t and y_1 >= -1000
    vnnlib_path = tmp_path / "prop.vnnlib"
    write_vnnlib(Spec(N_IN, 2, (Region(box, (rows,)),)), vnnlib_path)
    network = read_network(onnx_path.read_bytes(), onnx_path)
    _, outputs = _activation_inputs(network, box.lower + np.random.default_rng(0).random((5000, N_IN)))
    assert np.all(outputs[:, 0] < threshold)
    settings = VerifySettings(timeout=60, intermediate_alpha_steps=0)  # only the escalation optimises them
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path, settings, tmp_path / "proof.json")
    assert verdict.status == "unsat" and missing is not None, verdict.notes
    assert any("left a clause open" in note for note in verdict.notes)
    assert sum("-step α-CROWN on the intermediate bounds" in note for note in verdict.notes) == 1, verdict.notes
    assert not (tmp_path / "proof.json").exists()
