"""Certificates of proofs on sigmoid/tanh networks: the checker's enclosures and lines hold against
high-precision values (mpmath); real certificates (input split on few inputs, activation split on
many, mixed ReLU/sigmoid/tanh networks) check; forged ones (a leaf dropped, a split point moved in
one leaf, a side flipped, a false property, tightened recorded bounds) are rejected; the checker's
bounds hold on sampled points of random split domains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
from dense_chain import ActivationLayer, Chain
from random_nets import random_mlp, save_onnx

from verirepair.checker import bounds as checker_bounds
from verirepair.checker import check_certificate, sshaped
from verirepair.checker.onnx_reader import read_network
from verirepair.spec import Box, Clause, Region, Spec, write_vnnlib
from verirepair.verify import VerifySettings, verify_files
from verirepair.verify.certify import verify_with_certificate

ROOT = Path(__file__).resolve().parents[1]
mpmath.mp.dps = 40

EXACT = {"Sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)), "Tanh": mpmath.tanh}


def _chain(seed: int, n_in: int, activations: tuple[str, ...], width: int = 8) -> Chain:
    """A random MLP with these activations (``relu``, ``sigmoid``, ``tanh``), one per hidden layer."""
    chain = random_mlp(seed, n_in, [width] * len(activations), 2, activations[0], scale=1.0)
    kinds = iter(activations)
    return Chain(tuple(ActivationLayer(next(kinds), layer.size) if isinstance(layer, ActivationLayer) else layer
                       for layer in chain.layers))


def _problem(tmp_path: Path, seed: int, n_in: int, activations: tuple[str, ...], above_top: float,
             name: str = "net") -> tuple[Path, Path, float]:
    """A random network and the property ``y_0 < t`` on [-0.5, 0.5]^n, t = the largest sampled
    y_0 plus ``above_top`` times the sampled spread (negative: a false property). Returns t too."""
    chain = _chain(seed, n_in, activations)
    onnx_path = save_onnx(chain, tmp_path / f"{name}.onnx")
    rng = np.random.default_rng(seed + 100)
    samples = torch.tensor(rng.uniform(-0.5, 0.5, (20000, n_in)))
    out = chain.forward(samples)[:, 0]
    top = out.max().item()
    threshold = top + above_top * (top - out.min().item())
    return onnx_path, _property(tmp_path / f"{name}.vnnlib", n_in, threshold), threshold


def _property(path: Path, n_in: int, threshold: float) -> Path:
    box = Box(np.full(n_in, -0.5), np.full(n_in, 0.5))
    write_vnnlib(Spec(n_in, 2, (Region(box, (Clause(np.array([[-1.0, 0.0]]), np.array([-threshold])),)),)), path)
    return path


def _certify(onnx_path: Path, vnnlib_path: Path, certificate: Path) -> dict:
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path, VerifySettings(timeout=60), certificate)
    assert verdict.status == "unsat" and missing is None, verdict.notes
    return json.loads(certificate.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- enclosures and lines against mpmath ------------------------------------------------------

@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
def test_enclosures_contain_the_exact_values(kind: str) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, 300), rng.normal(0, 1e-8, 50), [0.0, 5e-324, -5e-324, 1e-300, 20.0, -20.0,
                                                                            40.0, -40.0, 800.0, -800.0, 1e300, -1e300]])
    lo, hi = sshaped.enclosure(kind, x)
    d_lo, d_hi = sshaped.derivative_enclosure(kind, x)
    for value, low, high, dlow, dhigh in zip(x, lo, hi, d_lo, d_hi):
        exact = EXACT[kind](mpmath.mpf(float(value)))
        derivative = exact * (1 - exact) if kind == "Sigmoid" else 1 - exact**2
        assert low <= exact <= high, value
        assert dlow <= derivative <= dhigh, value
        assert high - low <= 1e-12 * max(abs(float(exact)), 1e-300) + 1e-300  # and tight


@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh"])
def test_the_lines_hold_on_a_dense_grid_for_any_slope(kind: str) -> None:
    """``k·x + low <= f(x) <= k·x + high`` at 400 points of each interval (end points included),
    in exact arithmetic, for the relaxation's own slopes and for random ones."""
    rng = np.random.default_rng(1)
    centres, widths = rng.normal(0, 3, 60), rng.choice([1e-10, 1e-3, 0.5, 3.0, 12.0], 60)
    lower, upper = centres - widths * rng.random(60), centres + widths * rng.random(60)
    lower[:3], upper[:3] = [-2.0, 0.0, 0.0], [0.0, 2.0, 0.0]  # ends at 0, and the point 0
    k_low, c_low, k_up, c_up = sshaped.relaxation(kind, lower, upper)
    slope = rng.uniform(-0.2, 1.2, 60) * (0.25 if kind == "Sigmoid" else 1.0)
    low, high = sshaped.offsets(kind, slope, lower, upper)
    for i in range(60):
        for x in np.linspace(lower[i], upper[i], 400):
            exact = EXACT[kind](mpmath.mpf(float(x)))
            X = mpmath.mpf(float(x))
            assert mpmath.mpf(float(k_low[i])) * X + mpmath.mpf(float(c_low[i])) <= exact <= \
                mpmath.mpf(float(k_up[i])) * X + mpmath.mpf(float(c_up[i])), (i, x)
            assert mpmath.mpf(float(slope[i])) * X + mpmath.mpf(float(low[i])) <= exact <= \
                mpmath.mpf(float(slope[i])) * X + mpmath.mpf(float(high[i])), (i, x)
    # and tight: the relaxation's gap at the middle is small on narrow intervals
    mid = (lower + upper) / 2
    narrow = upper - lower < 1e-3
    assert np.all((k_up * mid + c_up - k_low * mid - c_low)[narrow] < 1e-6)


@pytest.mark.parametrize("activations", [("Sigmoid", "Sigmoid"), ("Tanh", "Relu")])
def test_bounds_hold_on_sampled_points_of_split_domains(activations: tuple[str, str]) -> None:
    """Random limits on activation inputs (as activation splits make them) and random slopes and
    multipliers: the checker's bound is below the objective at every sampled point of the box
    that meets the limits."""
    rng = np.random.default_rng(2)
    chain = _chain(3, 5, tuple(a.lower() for a in activations))
    network = read_network(_onnx_bytes(chain), "net.onnx")
    x = rng.uniform(-0.5, 0.5, (20000, 5))
    pre, h = [], x
    for step in network.steps:
        z = h @ step.weight.T + step.bias
        if step.activation is not None:
            pre.append(z)
        h = {None: z, "Relu": np.maximum(z, 0.0), "Tanh": np.tanh(z), "Sigmoid": 1 / (1 + np.exp(-z))}[step.activation]
    c, d = rng.standard_normal(2), float(rng.standard_normal())
    objective = h @ c + d
    lower, upper = np.full((1, 5), -0.5), np.full((1, 5), 0.5)
    checked = 0
    for _ in range(6):
        limits, inside = [], np.ones(len(x), dtype=bool)
        for k in range(2):
            low, high = np.full((1, 8), -np.inf), np.full((1, 8), np.inf)
            for n in rng.choice(8, 2, replace=False):
                point = float(np.quantile(pre[k][:, n], rng.uniform(0.2, 0.8)))
                if rng.random() < 0.5:
                    low[0, n] = point
                    inside &= pre[k][:, n] >= point
                else:
                    high[0, n] = point
                    inside &= pre[k][:, n] <= point
            limits.append((low, high))
        unrecorded = [(np.full((1, 8), np.inf), np.full((1, 8), -np.inf)) for _ in range(2)]
        bounds = checker_bounds.layer_bounds(network, lower, upper, unrecorded, limits)
        slopes = [rng.uniform(-0.5, 1.5, (1, 8, 2)) for _ in range(2)]
        multipliers = [(rng.uniform(-1, 3, (1, 8)), rng.uniform(-1, 3, (1, 8))) for _ in range(2)]
        value = checker_bounds.lagrangian_bounds(network, bounds, c, d, slopes, multipliers)[0]
        if inside.any():
            checked += 1
            assert not bounds.empty[0]
            assert value <= objective[inside].min()
            for k, step in enumerate(s for s in network.steps if s.activation is not None):
                position = [j for j, s in enumerate(network.steps) if s.activation is not None][k]
                z_lower, z_upper = bounds.pre_activation[position]
                assert np.all(z_lower[0] <= pre[k][inside].min(axis=0)) and np.all(pre[k][inside].max(axis=0) <= z_upper[0])
    assert checked >= 3


def _onnx_bytes(chain: Chain) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return save_onnx(chain, Path(folder) / "net.onnx").read_bytes()


# ---- real certificates -----------------------------------------------------------------------

def test_an_input_split_certificate_of_a_tanh_controller_checks(tmp_path: Path) -> None:
    network, spec = ROOT / "models" / "tanh_controller.onnx", ROOT / "specs" / "tanh_controller_steer_back.vnnlib"
    data = _certify(network, spec, tmp_path / "proof.json")
    assert isinstance(data["regions"][0], list)
    result = check_certificate(network, spec, tmp_path / "proof.json")
    assert result.ok and not result.trusted, result.message


@pytest.fixture(scope="module")
def few_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 4-input sigmoid/tanh network whose proof splits the input box."""
    tmp_path = tmp_path_factory.mktemp("sshaped_input_split")
    onnx_path, vnnlib_path, _ = _problem(tmp_path, 0, 4, ("sigmoid", "tanh"), 0.02)
    certificate = tmp_path / "proof.json"
    data = _certify(onnx_path, vnnlib_path, certificate)
    assert isinstance(data["regions"][0], list) and len(data["regions"][0]) > 4
    return certificate, onnx_path, vnnlib_path


def test_an_input_split_certificate_of_a_sigmoid_tanh_network_checks(few_inputs: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = few_inputs
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and not result.trusted and result.closings_checked > 4, result.message


def test_tightened_recorded_bounds_do_not_prove_a_false_property(few_inputs: tuple[Path, Path, Path],
                                                                 tmp_path: Path) -> None:
    """The certificate of a true property, its recorded bounds collapsed to points, given for a
    false one (the threshold below a sampled output): rejected."""
    certificate, onnx_path, _ = few_inputs
    false_spec, _ = _false_property(tmp_path, onnx_path, 4)
    data = json.loads(certificate.read_text())
    for closing in data["regions"][0]:
        closing[3] = [[[(l + u) / 2 for l, u in zip(lower, upper)]] * 2 for lower, upper in closing[3]]
    data["vnnlib_sha256"] = _sha256(false_spec)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    result = check_certificate(onnx_path, false_spec, forged)
    assert not result.ok and "not positive" in result.message, result.message


def _false_property(tmp_path: Path, onnx_path: Path, n_in: int) -> tuple[Path, float]:
    """``y_0 < t`` for t below the network's output at a point of the box: false."""
    network = read_network(onnx_path.read_bytes(), onnx_path)
    threshold = float(network.evaluate(np.zeros((1, n_in)))[0, 0]) - 1e-3
    spec = _property(tmp_path / "false.vnnlib", n_in, threshold)
    assert verify_files(onnx_path, spec, VerifySettings(timeout=30)).status == "sat"
    return spec, threshold


@pytest.fixture(scope="module")
def many_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 12-input tanh network (more inputs than input split takes) whose proof splits neurons."""
    tmp_path = tmp_path_factory.mktemp("activation_split")
    onnx_path, vnnlib_path, _ = _problem(tmp_path, 1, 12, ("tanh", "tanh"), 0.1)
    certificate = tmp_path / "proof.json"
    data = _certify(onnx_path, vnnlib_path, certificate)
    region = data["regions"][0]
    assert region["method"] == "activation-split"
    leaves = region["clauses"][0]["leaves"]
    assert len(leaves) > 4 and max(len(splits) for splits, _ in leaves) >= 3  # a real split tree
    return certificate, onnx_path, vnnlib_path


def test_an_activation_split_certificate_checks(many_inputs: tuple[Path, Path, Path]) -> None:
    certificate, onnx_path, vnnlib_path = many_inputs
    result = check_certificate(onnx_path, vnnlib_path, certificate)
    assert result.ok and not result.trusted and result.closings_checked > 4, result.message


@pytest.mark.parametrize(("activations", "seed", "above_top"), [(("tanh", "sigmoid"), 0, 0.3),
                                                                  (("relu", "tanh"), 1, 0.5),
                                                                  (("sigmoid", "relu"), 1, 0.2)])
def test_a_mixed_network_activation_split_certificate_checks(activations: tuple[str, str], seed: int, above_top: float,
                                                             tmp_path: Path) -> None:
    onnx_path, vnnlib_path, _ = _problem(tmp_path, seed, 12, activations, above_top)
    data = _certify(onnx_path, vnnlib_path, tmp_path / "proof.json")
    assert data["regions"][0]["method"] == "activation-split" and len(data["regions"][0]["clauses"][0]["leaves"]) > 1
    result = check_certificate(onnx_path, vnnlib_path, tmp_path / "proof.json")
    assert result.ok and not result.trusted, result.message


def _deepest_pair(leaves: list) -> tuple[int, int]:
    """Two sibling leaves: the same splits but the last one's side."""
    by_path = {json.dumps(splits[:-1]) + json.dumps(splits[-1][:3]): [] for splits, _ in leaves if splits}
    for index, (splits, _) in enumerate(leaves):
        if splits:
            by_path[json.dumps(splits[:-1]) + json.dumps(splits[-1][:3])].append(index)
    pair = next(indices for indices in by_path.values() if len(indices) == 2)
    return pair[0], pair[1]


def _drop_a_leaf(leaves: list) -> None:
    leaves.pop(_deepest_pair(leaves)[0])


def _move_a_split_point(leaves: list) -> None:
    """One of two siblings gets another split point: a gap or an overlap between them."""
    first, _ = _deepest_pair(leaves)
    leaves[first][0][-1][2] += 1e-3


def _flip_a_side(leaves: list) -> None:
    first, second = _deepest_pair(leaves)
    leaves[first][0][-1][3] = leaves[second][0][-1][3]


def _no_such_neuron(leaves: list) -> None:
    leaves[0][0].append([0, 99, 0.0, 1])


@pytest.mark.parametrize(("change", "reason"), [(_drop_a_leaf, "complete tree"), (_move_a_split_point, "split two ways"),
                                               (_flip_a_side, "complete tree"), (_no_such_neuron, "not in the network")])
def test_a_tampered_activation_split_certificate_is_rejected(change, reason: str,  # type: ignore[no-untyped-def]
                                                             many_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    certificate, onnx_path, vnnlib_path = many_inputs
    data = json.loads(certificate.read_text())
    change(data["regions"][0]["clauses"][0]["leaves"])
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    result = check_certificate(onnx_path, vnnlib_path, forged)
    assert not result.ok and reason in result.message, result.message


def test_no_slopes_or_multipliers_prove_a_false_property(many_inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The tree of a true property, with its recorded slopes and multipliers replaced by random
    ones, given for a false property: every version is rejected."""
    certificate, onnx_path, _ = many_inputs
    false_spec, _ = _false_property(tmp_path, onnx_path, 12)
    rng = np.random.default_rng(5)
    for attempt in range(3):
        data = json.loads(certificate.read_text())
        data["vnnlib_sha256"] = _sha256(false_spec)
        for _, neurons in data["regions"][0]["clauses"][0]["leaves"]:
            for neuron in neurons:
                neuron[2:] = [float(v) for v in rng.uniform(-1, 2, 4) * (attempt > 0)]
        forged = tmp_path / f"forged{attempt}.json"
        forged.write_text(json.dumps(data))
        result = check_certificate(onnx_path, false_spec, forged)
        assert not result.ok and "not positive" in result.message, result.message
